"""What a person running a training sees: the run's progress in optimiser steps with its ETA, where the
run writes, and how to resume it."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n

log = logging.getLogger("stn_face.train")


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar, but the training bar counts the run's optimiser steps (``global_step`` of
    ``max_steps``, its ETA the whole run's) instead of restarting every epoch."""

    def _start(self, trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.initial = trainer.global_step  # a resumed run starts where it stopped
        bar.set_description("train steps")

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start(trainer)

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        if self.train_progress_bar is None or self.train_progress_bar.disable:
            return
        if self._leave:  # a closed bar per epoch was asked for: start a new one at the current step
            self.train_progress_bar = self.init_train_tqdm()
            self._start(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        bar = self.train_progress_bar
        if bar is not None and self._should_update(step, bar.total):
            _update_n(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def resume_command(output_dir: str | Path) -> str:
    """The command that resumes the run writing to ``output_dir``: the same arguments, plus
    ``ckpt_path=last`` and the run folder."""
    keep = [a for a in sys.argv[1:] if not a.startswith(("ckpt_path=", "hydra.run.dir="))]
    return shlex.join(["stn-face-train", *keep, "ckpt_path=last", f"hydra.run.dir={output_dir}"])


def _checkpoint_times(every: int | None) -> str:
    return f"every {every} steps and at the end" if every else "at the end"


_LOGGER_FILES = {
    "csv": "  csv/version_0/metrics.csv   every logged value, from the first logging step",
    "wandb": "  wandb/                      the W&B run (offline without an API key: wandb sync wandb/)",
    "tensorboard": "  tensorboard/                TensorBoard event files",
}


def announce_run(output_dir: str | Path, max_steps: int, fitting: bool, checkpoint_every: int | None = None,
                 loggers: Sequence[str] = ()) -> None:
    """Say at the start where the run writes and what will be there (``checkpoint_every``: the periodic
    checkpoint's ``every_n_train_steps``, None: only at the end; ``loggers``: the logger group's keys)."""
    if fitting:
        lines = [f"run folder: {output_dir} ({max_steps} optimiser steps)",
                 "  metrics.json, roc_<set>.png  validation results",
                 f"  checkpoints/last.ckpt       {_checkpoint_times(checkpoint_every)}; also on Ctrl-C or SIGTERM",
                 "  alignment/step*.png         what the spatial transformer does to fixed faces",
                 *(_LOGGER_FILES[name] for name in loggers if name in _LOGGER_FILES),
                 f"resume: {resume_command(output_dir)}"]
        log.info("\n".join(lines))
    else:
        log.info("evaluating into %s: metrics.json, roc_<set>.png", output_dir)


def report_interrupt(output_dir: str | Path, step: int, checkpoint_every: int | None = None) -> None:
    """After Ctrl-C: what was kept and the command that goes on."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    kept = (f"{last} holds the latest periodic checkpoint" if last.is_file()
            else f"no checkpoint was written yet (one is written {_checkpoint_times(checkpoint_every)})")
    print(f"\ninterrupted at step {step}: {kept}. Resume with:\n  {resume_command(output_dir)}", file=sys.stderr,
          flush=True)


def no_checkpoint_to_resume(checkpoints: str | Path, required: bool = False) -> None:
    """``ckpt_path=last`` found no ``last.ckpt``: say that the run starts at step 0, or (``required``,
    ``resume_required=true``) refuse with an :class:`~stn_face.errors.InputError`."""
    if required:
        from stn_face.errors import InputError

        raise InputError(f"resume_required=true but there is no checkpoint in {checkpoints} (ckpt_path=last "
                         "looks for last.ckpt there): check that hydra.run.dir= names the run to resume")
    if _is_rank_zero():
        log.info("no checkpoint in %s: starting at step 0", checkpoints)


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def report_result(record: dict[str, Any], metrics_path: str | Path, seconds: float) -> None:
    """The last lines of a run: the numbers it produced, how long it took and where everything is."""
    metrics_path = Path(metrics_path)
    name = record.get("eval")
    step = record.get("global_step", record.get("step"))
    if name and record.get("accuracy_mean") is not None:
        accuracy = f"accuracy {100 * record['accuracy_mean']:.2f} %"
        if record.get("accuracy_std") is not None:
            accuracy += f" ± {100 * record['accuracy_std']:.2f}"
        auc = f", AUC {record['auc']:.4f}" if record.get("auc") is not None else ""
        pairs = f" on {record['n_pairs']} pairs" if record.get("n_pairs") else ""
        numbers = f"{name}: {accuracy}{auc}{pairs}" + (f" at step {step}" if step is not None else "")
    else:
        numbers = "no verification set was scored" + (f" (step {step})" if step is not None else "")
    others = [f"{other} {100 * value['accuracy_mean']:.2f} %" for other, value in (record.get("sets") or {}).items()
              if other != name and isinstance(value, dict) and value.get("accuracy_mean") is not None]
    log.info("%s%s\ndone in %s; run folder %s (metrics: %s)", numbers,
             f"; also {', '.join(others)}" if others else "", _duration(seconds), metrics_path.parent, metrics_path.name)


class _DropTips(logging.Filter):
    """Drops Lightning's advertisements (the litlogger / litmodels tips): they are not about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("💡 Tip" in message or "litlogger" in message or "litmodels" in message)


_TIPS = _DropTips()


def quiet_library_logs() -> None:
    """Each log line once and no third-party tips. Lightning gives its ``lightning`` logger a console handler
    of its own and still passes every record on to the root logger, where Hydra's console (and file) handlers
    print it again: under Hydra (the root logger has handlers) Lightning's own console handler goes."""
    import warnings

    # Lightning's notes about itself, not about the run
    warnings.filterwarnings("ignore", message=r".*is not supported by the model summary")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    root = logging.getLogger()
    if root.handlers:
        lightning_log = logging.getLogger("lightning")
        for handler in list(lightning_log.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_log.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.logger_connector.logger_connector",
                 "lightning.pytorch.trainer.connectors.callback_connector"):
        logger = logging.getLogger(name)
        if _TIPS not in logger.filters:
            logger.addFilter(_TIPS)
