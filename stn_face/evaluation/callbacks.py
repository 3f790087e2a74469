"""Lightning callbacks for verification: embed on every rank, score on the full set, log and plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from stn_face.evaluation.collect import FeatureCollector
from stn_face.evaluation.scoring import set_metrics

log = logging.getLogger(__name__)

SHORT_KEYS = {"accuracy_mean": "acc", "accuracy_std": "acc_std", "auc": "auc", "eer": "eer"}


class VerificationCallback(L.Callback):
    """Computes verification metrics for every eval set of the DataModule after validation and test.

    Each rank embeds its share of the images; features are gathered without the padding duplicates
    of DistributedSampler, so a 2-process run scores exactly what a 1-process run scores. Logs
    ``val/<set>_acc``, ``_acc_std``, ``_auc``, ``_eer``, ``_tar@far=1e-3`` and the best accuracy so
    far; writes ``metrics.json`` (the sets scored so far, :mod:`stn_face.evaluation.artifacts`),
    ``roc_<set>.npz`` and ``roc_<set>.png`` to ``output_dir`` (rank 0) and logs the ROC picture to the
    logger. The best metrics (with the calibrated threshold) are saved in checkpoints; an evaluation
    without training (``validate``/``test``) starts with no latest metrics, so only what it scored is
    reported, at the step of the checkpoint it scored.
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
        if not self._fitting(trainer):
            self.latest = {}  # a checkpoint's restored values describe another evaluation
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
    @staticmethod
    def _fitting(trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit"

    def _step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """The optimiser step of the weights being scored: a checkpoint's own step outside fitting."""
        loaded = getattr(pl_module, "loaded_step", None)
        return trainer.global_step if self._fitting(trainer) or loaded is None else int(loaded)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for eval_set, collector in zip(self._eval_sets(trainer), self.collectors):
            indices, features = collector.compute()
            collector.reset()
            expected = len(eval_set.items)
            if indices.numel() != expected or (expected and int(indices[-1]) != expected - 1):
                log.warning("%s: got features of %d of %d images (limit_val_batches?); not scored",
                            eval_set.name, indices.numel(), expected)
                continue
            metrics, pairs = set_metrics(eval_set, features.cpu().numpy())
            metrics["epoch"], metrics["step"] = trainer.current_epoch, self._step(trainer, pl_module)
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
                self._write(trainer, stage, name, metrics, pairs)
        if trainer.is_global_zero and self.latest:
            self._write_record(trainer, pl_module)

    def _output_dir(self, trainer) -> Path:
        return Path(self.output_dir or trainer.default_root_dir)

    def _write(self, trainer, stage: str, name: str, metrics: dict, pairs) -> None:
        from stn_face.evaluation.artifacts import write_roc

        written = write_roc(self._output_dir(trainer), name, pairs, metrics, log_fpr=self.log_fpr,
                            published_roc_dir=self.published_roc_dir, plot=self.plot,
                            title=f"{name} ROC, step {metrics['step']}")
        if len(written) > 1:
            from stn_face.evaluation.image_log import log_image_file

            log_image_file(trainer, f"{stage}/roc_{name}", written[-1])

    def _write_record(self, trainer, pl_module) -> None:
        """``metrics.json`` as far as the run has got (the training job rewrites it when it ends)."""
        from stn_face.evaluation.artifacts import run_record, write_metrics

        kind = "train" if self._fitting(trainer) else "validate"
        record = run_record(kind, self.latest, [s.name for s in self._eval_sets(trainer)], best=self.best,
                            step=self._step(trainer, pl_module), skipped_steps=getattr(pl_module, "skipped_steps", 0))
        write_metrics(self._output_dir(trainer), record)

    # ---------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "latest": self.latest}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self.latest = dict(state_dict.get("latest", {}))
