"""Pictures go to the loggers that show them; a failing logger never ends the run."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from stn_face.evaluation.image_log import log_image_file


class WandbLogger:  # named as Lightning's: the helper dispatches on the class name
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def log_image(self, **kwargs) -> None:
        self.calls.append(kwargs)


class TensorBoardLogger:
    def __init__(self) -> None:
        self.images: list[tuple] = []
        self.experiment = SimpleNamespace(add_image=lambda key, image, step, dataformats: self.images.append(
            (key, image.shape, step, dataformats)))


class CSVLogger:
    pass


def test_each_logger_gets_what_it_can_show(tmp_path: Path, caplog) -> None:
    path = tmp_path / "roc.png"
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(path)
    wandb, board = WandbLogger(), TensorBoardLogger()
    broken = WandbLogger()
    broken.log_image = lambda **kwargs: (_ for _ in ()).throw(RuntimeError("offline"))
    trainer = SimpleNamespace(loggers=[wandb, board, CSVLogger(), broken], global_step=5)
    with caplog.at_level(logging.WARNING):
        log_image_file(trainer, "val/roc_lfw", path)
    assert wandb.calls == [{"key": "val/roc_lfw", "images": [str(path)], "step": 5}]
    assert board.images == [("val/roc_lfw", (6, 8, 3), 5, "HWC")]
    assert "could not log roc.png to WandbLogger: offline" in caplog.text
