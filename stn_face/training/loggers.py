"""The training job's loggers: hyper-parameters, W&B set-up and clean finishing (pictures are sent by
:func:`stn_face.evaluation.image_log.log_image_file`, which the evaluation callbacks use too)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


def log_hyperparameters(trainer: L.Trainer, cfg) -> None:
    """Send the fully resolved config to every logger (W&B shows it as the run config)."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def finish_loggers(trainer: L.Trainer) -> None:
    """Close W&B runs so the next job of a Hydra multirun starts its own run."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            if wandb.run is not None:
                wandb.finish()


_OFFLINE_NOTICE_SHOWN = False


def wandb_mode() -> str:
    """``online`` when W&B credentials exist, else ``offline`` (unless WANDB_MODE says otherwise)."""
    import os

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def make_wandb_logger(project: str = "stn_face", entity: str | None = None, group: str | None = None,
                      name: str | None = None, save_dir: str = ".", tags: list[str] | None = None):
    """A ``WandbLogger`` for one Hydra job: named after the job's overrides, grouped by sweep.

    Runs offline (a local run folder under ``save_dir/wandb``, upload later with ``wandb sync``)
    when no API key is configured, and says so once.
    """
    global _OFFLINE_NOTICE_SHOWN
    import os

    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode()
    os.environ["WANDB_MODE"] = mode
    if mode == "offline" and not _OFFLINE_NOTICE_SHOWN:
        log.warning("W&B: no API key found, logging offline to %s/wandb; upload later with `wandb sync "
                    "%s/wandb/offline-run-*`", save_dir, save_dir)
        _OFFLINE_NOTICE_SHOWN = True
    group = group or _hydra_group()
    name = name or _hydra_job_name()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, entity=entity, group=group, name=name, save_dir=save_dir,
                       tags=list(tags or []), mode=mode, log_model=False, reinit="finish_previous")


def _hydra_group() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:  # no Hydra run (the module used from Python)
        return None
    if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
        return Path(hydra_cfg.sweep.dir).name
    return None


def _hydra_job_name() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:  # no Hydra run (the module used from Python)
        return None
    return hydra_cfg.job.override_dirname or Path(hydra_cfg.runtime.output_dir).name
