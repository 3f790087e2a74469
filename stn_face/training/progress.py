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
                 f"  checkpoints/last.ckpt       {_checkpoint_times(checkpoint_every)} (resume: ckpt_path=last)",
                 "  alignment/step*.png         what the spatial transformer does to fixed faces",
                 *(_LOGGER_FILES[name] for name in loggers if name in _LOGGER_FILES)]
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
