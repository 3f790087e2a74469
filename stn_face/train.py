"""``stn-face-train``: compose the configs, build everything with Hydra, fit, write metrics.json.

Examples::

    stn-face-train experiment=smoke
    stn-face-train transform=affine localization=conv2_fc2 trainer.max_steps=2000
    stn-face-train -m experiment=smoke transform=identity,similarity,affine,projective
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from stn_face.config import CONF_DIR
from stn_face.errors import friendly_errors

log = logging.getLogger("stn_face.train")


def eval_set_configs(cfg: DictConfig) -> list[DictConfig]:
    """The primary ``eval`` set first, then any ``extra_eval.<name>`` sets (e.g. YTF in the paper setting)."""
    sets = [cfg.eval] if cfg.get("eval") else []
    sets += list((cfg.get("extra_eval") or {}).values())
    return sets


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build datamodule, model, callbacks, loggers and trainer from ``cfg``; fit; return the metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    eval_sets = [hydra.utils.instantiate(c) for c in eval_set_configs(cfg)]
    # passed after instantiation: Hydra would turn the dataclass objects back into configs
    datamodule = hydra.utils.instantiate(cfg.data, _partial_=True)(eval_sets=eval_sets)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.prepare_data()
    datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
    model.model_config = model_config(cfg)  # saved in checkpoints: they rebuild without the run dir
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    from stn_face.loggers import log_hyperparameters

    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(trainer, cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg)
    if ckpt_path:
        from stn_face.checkpoint import check_compatible

        check_compatible(model, ckpt_path)
    if cfg.get("train", True):
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    else:
        if not ckpt_path:
            raise FileNotFoundError("train=false evaluates a checkpoint: give ckpt_path=PATH")
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.get("test", False):
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path if not cfg.get("train", True) else None)
    metrics = collect_metrics(trainer, callbacks, model)
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics written to %s", out / "metrics.json")
    from stn_face.loggers import finish_loggers

    finish_loggers(trainer)
    return metrics


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved configs that rebuild the network (no Hydra run dir needed), stored in checkpoints
    by :meth:`StnFaceModule.on_save_checkpoint` and read by :class:`stn_face.embedder.FaceEmbedder`."""
    result: dict[str, Any] = {"format": 1}
    for key in ("transform", "localization", "backbone", "head"):
        if cfg.get(key) is not None:
            result[key] = OmegaConf.to_container(cfg[key], resolve=True)
    data = cfg.get("data")
    if data is not None:
        result["image_size"] = data.get("image_size")
        crop = data.get("crop")
        result["crop"] = OmegaConf.to_container(crop, resolve=True) if crop is not None else None
    return result


def resolve_ckpt_path(value: str | None, cfg: DictConfig) -> str | None:
    """``ckpt_path=last`` resumes from ``<output_dir>/checkpoints/last.ckpt`` when it exists."""
    if value in (None, "", "null"):
        return None
    if value == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(path) if path.exists() else None
    if not Path(value).is_file():
        raise FileNotFoundError(f"ckpt_path={value} does not exist; give a checkpoint file or `last`")
    return value


def collect_metrics(trainer: L.Trainer, callbacks: list, model) -> dict[str, Any]:
    """``metrics.json``: the primary set's latest verification metrics at the top level (the keys
    ``stn-face-eval`` writes), every set under ``sets``, the best per set under ``best``, and the
    final logged training values under ``train``."""
    from stn_face.evaluation.callbacks import VerificationCallback

    verification = next((c for c in callbacks if isinstance(c, VerificationCallback)), None)
    result: dict[str, Any] = {}
    if verification is not None and verification.latest:
        primary = next(iter(verification.latest))
        result.update(verification.latest[primary])
        result["eval"] = primary
        result["sets"] = verification.latest
        result["best"] = verification.best
    result["train"] = {k: float(v) for k, v in trainer.callback_metrics.items()
                       if k.startswith(("train/", "transform/")) and v.numel() == 1}
    result["global_step"] = trainer.global_step
    result["skipped_steps"] = getattr(model, "skipped_steps", 0)
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    with friendly_errors():
        metrics = train(cfg)
    return metrics.get("accuracy_mean")


if __name__ == "__main__":
    main()
