"""Build the datamodule, model, callbacks, loggers and trainer from a composed config; fit or validate;
write ``metrics.json`` (:mod:`stn_face.evaluation.artifacts`). The command is ``stn-face-train``."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("stn_face.train")


def eval_set_configs(cfg: DictConfig) -> list[DictConfig]:
    """The primary ``eval`` set first, then any ``extra_eval.<name>`` sets (e.g. YTF in the paper setting);
    a protocol may make several of one config (``eval.bin_dir``: one set per ``.bin`` file in it,
    :func:`~stn_face.data.eval_sets.expand_eval_configs`)."""
    from stn_face.data.eval_sets import expand_eval_configs

    sets = [cfg.eval] if cfg.get("eval") else []
    sets += list((cfg.get("extra_eval") or {}).values())
    return expand_eval_configs(sets)


def resolve_ckpt_path(value: str | None, cfg: DictConfig) -> str | None:
    """``ckpt_path``: None to start afresh; ``last`` resumes ``<output_dir>/checkpoints/last.ckpt`` when it
    exists (a fresh start otherwise, so the same command starts and resumes a run); a file or a run
    folder names a checkpoint (:func:`stn_face.paths.resolve_checkpoint`)."""
    from stn_face.paths import resolve_checkpoint

    if value in (None, "", "null"):
        return None
    if value == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if path.exists():
            return str(path)
        from stn_face.training.progress import no_checkpoint_to_resume

        no_checkpoint_to_resume(path.parent, required=bool(cfg.get("resume_required", False)))
        return None
    return str(resolve_checkpoint(value, option="ckpt_path"))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (``train=true``) or validate a checkpoint (``train=false``; with no ``ckpt_path`` and a frozen
    pretrained backbone, the network as configured); returns the ``metrics.json`` record."""
    from stn_face.checkpoint import check_compatible, load_checkpoint, model_config
    from stn_face.training.loggers import finish_loggers, log_hyperparameters
    from stn_face.training.progress import announce_run, quiet_library_logs, report_interrupt, report_result
    from stn_face.training.settings_check import check_settings

    started = time.monotonic()
    check_settings(cfg)  # the CLI checked already (before making the run folder); configs composed in Python
    quiet_library_logs()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    fitting = bool(cfg.get("train", True))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg)
    # train=false without a checkpoint scores the network as configured, untrained: meaningful only for a
    # frozen pretrained backbone (the transformer at its start view, e.g. transform.init_frame)
    untrained = not fitting and not ckpt_path
    if untrained and not OmegaConf.select(cfg, "model.freeze_backbone", default=False):
        from stn_face.errors import InputError

        raise InputError("train=false evaluates a checkpoint: give ckpt_path=PATH (a .ckpt file or a run folder); "
                         "without one it scores only a frozen pretrained backbone (model.freeze_backbone=true)")
    if not fitting and ckpt_path:
        stored = load_checkpoint(ckpt_path, trust=bool(cfg.get("trust_checkpoint")))
        use_checkpoint_network(cfg, stored)
    require_config_values(cfg, ("data", "eval"))
    eval_sets = [hydra.utils.instantiate(c) for c in eval_set_configs(cfg)]
    if eval_sets and cfg.get("eval") and cfg.eval.get("name") != eval_sets[0].name:
        from omegaconf import open_dict

        with open_dict(cfg):  # a .bin set is named by its file: the best checkpoint follows val/<that name>_acc
            cfg.eval.name = eval_sets[0].name
    # passed after instantiation: Hydra would turn the dataclass objects back into configs
    datamodule = hydra.utils.instantiate(cfg.data, _partial_=True)(eval_sets=eval_sets)
    if fitting or untrained:  # an untrained head still needs its size: the training identities
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            datamodule.prepare_data()
        datamodule.setup("fit")
    else:  # the training photos are not needed: the identities (the head's size) come from the checkpoint
        datamodule.class_names = list((stored.get("FaceDataModule") or {}).get("class_names") or [])
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            datamodule.prepare_eval_data()
        datamodule.setup("validate")
    model = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
    model.model_config = model_config(cfg)  # saved in checkpoints: they rebuild without the run dir
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(trainer, cfg)
    if ckpt_path:
        check_compatible(model, ckpt_path, trust=bool(cfg.get("trust_checkpoint")))  # before Lightning reads it
    checkpoint_every = OmegaConf.select(cfg, "callbacks.periodic_checkpoint.every_n_train_steps", default=None)
    if trainer.is_global_zero:
        announce_run(cfg.paths.output_dir, trainer.max_steps, fitting, checkpoint_every,
                     loggers=[name for name, c in (cfg.get("logger") or {}).items() if c])
    if fitting:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.interrupted and trainer.is_global_zero:
            report_interrupt(cfg.paths.output_dir, trainer.global_step, checkpoint_every)
    else:
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.get("test", False):
        trainer.test(model, datamodule=datamodule, ckpt_path=None if fitting else ckpt_path)
    record = collect_metrics(trainer, callbacks, model, primary=eval_sets[0].name if eval_sets else None,
                             kind="train" if fitting else "validate", untrained=untrained)
    if trainer.is_global_zero:
        from stn_face.evaluation.artifacts import write_metrics

        path = write_metrics(cfg.paths.output_dir, record)
        report_result(record, path, time.monotonic() - started)
    finish_loggers(trainer)
    return record


def require_config_values(cfg: DictConfig, groups: tuple[str, ...]) -> None:
    """An :class:`~stn_face.errors.InputError` naming every ``???`` value of ``groups`` the user must set
    (e.g. ``data=folder`` without ``data.root``), instead of a constructor's missing-argument traceback."""
    from omegaconf import OmegaConf

    from stn_face.errors import InputError

    for group in groups:
        node = cfg.get(group)
        if node is None:
            continue
        missing = [key for key in node if OmegaConf.is_missing(node, key)]
        if missing:
            choice = node.get("name") or group
            settings = " ".join(f"{group}.{key}=..." for key in missing)
            raise InputError(f"{group}={choice} needs {settings} on the command line (see conf/{group}/{choice}.yaml "
                             f"for what {'they mean' if len(missing) > 1 else 'it means'})")


def use_checkpoint_network(cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """Evaluation of a checkpoint builds the network the checkpoint describes (its ``model_config``:
    transform, localization, backbone, head, input size and crop), whatever the composed defaults say,
    so ``train=false ckpt_path=CKPT`` needs none of the configs it was trained with."""
    from omegaconf import OmegaConf, open_dict

    from stn_face.checkpoint import checkpoint_model_config

    stored = checkpoint_model_config(ckpt, ckpt["_path"])
    with open_dict(cfg):
        for key in ("transform", "localization", "backbone", "head"):
            if stored.get(key) is not None:
                cfg[key] = OmegaConf.create(stored[key])
        if stored.get("image_size"):
            cfg.data.image_size = stored["image_size"]
        if stored.get("crop"):
            cfg.data.crop = OmegaConf.create(stored["crop"])


def collect_metrics(trainer: L.Trainer, callbacks: list, model, primary: str | None, kind: str,
                    untrained: bool = False) -> dict[str, Any]:
    """The run's ``metrics.json`` record: the sets scored in this run (the primary one at the top), the best
    per set (training), the final logged training values and the step of the scored weights (0 and
    ``"untrained": true`` for a network scored as configured, ``train=false`` without a checkpoint)."""
    from stn_face.evaluation.artifacts import run_record
    from stn_face.evaluation.callbacks import VerificationCallback

    verification = next((c for c in callbacks if isinstance(c, VerificationCallback)), None)
    sets = dict(verification.latest) if verification is not None else {}
    train = {k: float(v) for k, v in trainer.callback_metrics.items()
             if k.startswith(("train/", "transform/")) and v.numel() == 1} if kind == "train" else None
    return run_record(kind, sets, [primary] if primary else [],
                      best=verification.best if verification is not None else {}, train=train,
                      step=trainer.global_step if kind == "train" else 0 if untrained else model.loaded_step,
                      skipped_steps=getattr(model, "skipped_steps", 0), **({"untrained": True} if untrained else {}))
