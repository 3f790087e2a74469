"""Lightning callbacks for verification: embed on every rank, score on the full set, log and plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from stn_face.evaluation.collect import FeatureCollector
from stn_face.evaluation.verification import save_roc_npz, set_metrics

log = logging.getLogger(__name__)

SHORT_KEYS = {"accuracy_mean": "acc", "accuracy_std": "acc_std", "auc": "auc", "eer": "eer"}


class VerificationCallback(L.Callback):
    """Computes verification metrics for every eval set of the DataModule after validation and test.

    Each rank embeds its share of the images; features are gathered without the padding duplicates
    of DistributedSampler, so a 2-process run scores exactly what a 1-process run scores. Logs
    ``val/<set>_acc``, ``_acc_std``, ``_auc``, ``_eer``, ``_tar@far=1e-3`` and the best accuracy so
    far; writes ``<set>_metrics.json``, ``roc_<set>.npz`` and ``roc_<set>.png`` to ``output_dir``
    (rank 0) and logs the ROC picture to the logger. The best metrics (with the calibrated
    threshold) are saved in checkpoints.
    """

    def __init__(self, output_dir: str | None = None, log_fpr: bool = True, published_roc_dir: str | None = None,
                 plot: bool = True) -> None:
        self.output_dir = output_dir
        self.log_fpr = log_fpr
        self.published_roc_dir = published_roc_dir
        self.plot = plot
        self.collectors: list[FeatureCollector] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.best: dict[str, dict[str, Any]] = {}

    # -------------------------------------------------------------------------------------- collect
    def _eval_sets(self, trainer: L.Trainer) -> list:
        datamodule = trainer.datamodule
        return list(getattr(datamodule, "eval_sets", []) or [])

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.collectors = [FeatureCollector().to(pl_module.device) for _ in self._eval_sets(trainer)]

    def _collect(self, outputs: Any, dataloader_idx: int) -> None:
        if outputs is None or not self.collectors:
            return
        self.collectors[dataloader_idx].update(outputs["indices"], outputs["features"])

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")

    # ---------------------------------------------------------------------------------------- score
    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for eval_set, collector in zip(self._eval_sets(trainer), self.collectors):
            indices, features = collector.compute()
            collector.reset()
            expected = len(eval_set.items)
            if indices.numel() != expected or (expected and int(indices[-1]) != expected - 1):
                log.warning("%s: got features of %d of %d images (limit_val_batches?); not scored",
                            eval_set.name, indices.numel(), expected)
                continue
            metrics, (fpr, tpr) = set_metrics(eval_set, features.cpu().numpy())
            metrics["epoch"], metrics["step"] = trainer.current_epoch, trainer.global_step
            self.latest[eval_set.name] = metrics
            best = self.best.get(eval_set.name)
            if best is None or metrics["accuracy_mean"] >= best["accuracy_mean"]:
                self.best[eval_set.name] = metrics
            name = eval_set.name
            values = {f"{stage}/{name}_{short}": float(metrics[key]) for key, short in SHORT_KEYS.items()
                      if metrics.get(key) is not None}
            for far, tar in metrics["tar_at_far"].items():
                if tar is not None:
                    values[f"{stage}/{name}_tar@far={far}"] = float(tar)
            values[f"{stage}/{name}_acc_best"] = float(self.best[name]["accuracy_mean"])
            pl_module.log_dict(values, sync_dist=False, batch_size=1, add_dataloader_idx=False)
            if trainer.is_global_zero:
                self._write(trainer, stage, name, metrics, fpr, tpr)

    def _write(self, trainer, stage: str, name: str, metrics: dict, fpr: np.ndarray, tpr: np.ndarray) -> None:
        out = Path(self.output_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stage}_{name}_metrics.json").write_text(json.dumps(metrics, indent=2))
        save_roc_npz(out / f"roc_{name}.npz", fpr, tpr)
        if not self.plot or fpr.size == 0:
            return
        from stn_face.evaluation.plots import load_published_rocs, plot_roc
        from stn_face.loggers import log_image_file

        published = None
        if self.published_roc_dir and Path(self.published_roc_dir).is_dir() and name.startswith("lfw"):
            published = load_published_rocs(self.published_roc_dir)
        label = f"{name} (acc {100 * metrics['accuracy_mean']:.2f}%, AUC {metrics['auc'] or float('nan'):.3f})"
        png = plot_roc({label: (fpr, tpr)}, out / f"roc_{name}.png", log_fpr=self.log_fpr, published=published,
                       title=f"{name} ROC, step {trainer.global_step}")
        log_image_file(trainer, f"{stage}/roc_{name}", png)

    # ---------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "latest": self.latest}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self.latest = dict(state_dict.get("latest", {}))
