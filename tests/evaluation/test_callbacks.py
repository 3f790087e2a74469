"""The verification callback outside a real run: features in, metrics logged, metrics.json and ROC out."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from stn_face.data.eval_sets import VerificationSet
from stn_face.data.protocols import Pair
from stn_face.evaluation.callbacks import VerificationCallback


def _eval_set(tmp_path: Path) -> VerificationSet:
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("")
    eval_set = VerificationSet(name="tiny", protocol="lfw", pairs_file=str(pairs_file), image_root=str(tmp_path),
                               prepared_root=str(tmp_path))
    pairs = [Pair(f"p{fold}/a.jpg", f"p{fold}/b.jpg", True, fold) for fold in range(2)]
    pairs += [Pair(f"p{fold}/a.jpg", f"q{fold}/c.jpg", False, fold) for fold in range(2)]
    eval_set.items = eval_set.set_pairs(pairs, lambda group: [group])
    return eval_set


def _fake_run(tmp_path: Path, eval_set, fn: str = "fit"):
    logged: dict[str, float] = {}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(eval_sets=[eval_set]), state=SimpleNamespace(fn=fn),
                              sanity_checking=False, global_step=30, current_epoch=1, is_global_zero=True,
                              default_root_dir=str(tmp_path), loggers=[])
    module = SimpleNamespace(device=torch.device("cpu"), skipped_steps=2, loaded_step=None,
                             log_dict=lambda values, **kw: logged.update(values))
    return trainer, module, logged


def test_one_validation_writes_the_record_and_the_roc(tmp_path: Path) -> None:
    eval_set = _eval_set(tmp_path)
    n = len(eval_set.items)
    features = torch.tensor(np.random.default_rng(0).normal(size=(n, 4)), dtype=torch.float32)
    callback = VerificationCallback(output_dir=str(tmp_path / "out"), plot=False)
    trainer, module, logged = _fake_run(tmp_path, eval_set)
    callback.on_validation_epoch_start(trainer, module)
    half = n // 2  # two batches, as a loader gives them
    callback.on_validation_batch_end(trainer, module, {"indices": torch.arange(half), "features": features[:half]},
                                     None, 0)
    callback.on_validation_batch_end(trainer, module, {"indices": torch.arange(half, n), "features": features[half:]},
                                     None, 1)
    callback.on_validation_epoch_end(trainer, module)

    assert "val/tiny_acc" in logged and "val/tiny_acc_best" in logged
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (record["kind"], record["eval"], record["n_pairs"]) == ("train", "tiny", 4)
    assert (record["step"], record["global_step"], record["skipped_steps"]) == (30, 30, 2)  # the interim file too
    assert set(record["best"]) == {"tiny"}
    assert (tmp_path / "out" / "roc_tiny.npz").is_file()
    assert callback.state_dict()["latest"]["tiny"]["step"] == 30


def test_missing_features_are_not_scored(tmp_path: Path) -> None:
    eval_set = _eval_set(tmp_path)
    callback = VerificationCallback(output_dir=str(tmp_path / "out"), plot=False)
    trainer, module, logged = _fake_run(tmp_path, eval_set, fn="validate")
    callback.on_validation_epoch_start(trainer, module)
    callback.on_validation_batch_end(trainer, module, {"indices": torch.arange(2), "features": torch.ones(2, 4)},
                                     None, 0)
    callback.on_validation_epoch_end(trainer, module)  # limit_val_batches: 2 of 6 images
    assert logged == {} and not (tmp_path / "out" / "metrics.json").exists()
