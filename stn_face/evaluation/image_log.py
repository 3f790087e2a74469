"""Send a picture file to whichever Lightning loggers can show one (W&B, TensorBoard)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


def log_image_file(trainer: L.Trainer, key: str, path: str | Path) -> None:
    """Log a PNG to every attached logger that can show images (W&B, TensorBoard); others keep the file."""
    path = Path(path)
    for logger in trainer.loggers:
        kind = type(logger).__name__
        try:
            if kind == "WandbLogger":
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
            elif kind == "TensorBoardLogger":
                import matplotlib.image as mpimg

                image = mpimg.imread(str(path))[..., :3]
                logger.experiment.add_image(key, image, trainer.global_step, dataformats="HWC")
        except Exception as error:  # noqa: BLE001 - a logging hiccup must never end a training run
            log.warning("could not log %s to %s: %s", path.name, kind, error)
