"""A signal is a checkpoint: Ctrl-C (SIGINT), SIGTERM (what Slurm, Kubernetes and ``timeout`` send before
they kill a job) and the cluster's pre-emption signal (SIGUSR1 by default, as Slurm's ``--signal``) make the
run finish its current optimiser step, write ``checkpoints/last.ckpt`` at that step (every rank's state:
the whole model, optimiser, schedulers, data order and the sharded Partial FC head), print the command that
resumes it, and exit with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

Lightning's own handling is replaced while training runs: its SIGTERM handler exits 0 without a checkpoint
and its Ctrl-C handling exits 1 without one. The handlers here only set a flag; at the end of every step the
ranks agree on it (one tiny all-reduce, so a signal that reached one rank stops all of them at the same
step), all ranks take part in :meth:`lightning.Trainer.save_checkpoint` (collective: Partial FC gathers its
shards into the file) and then leave with :class:`RunInterrupted`, which skips validation and the rest of
the run. A second Ctrl-C stops at once without a checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("stn_face.train")

#: a process killed by signal N exits with 128 + N in every shell (130: SIGINT, 143: SIGTERM)
SIGNAL_EXIT_BASE = 128


def signal_number(name: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15; an :class:`~stn_face.errors.InputError` for anything else."""
    if isinstance(name, int) and not isinstance(name, bool):
        return int(signal.Signals(name))
    text = str(name).strip().upper()
    if text.isdigit():
        return int(signal.Signals(int(text)))
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[text])
    except KeyError:
        from stn_face.errors import InputError

        raise InputError(
            f"callbacks.interrupt_checkpoint: unknown signal {name!r} (e.g. SIGUSR1, SIGUSR2, SIGTERM)") from None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunInterrupted(SystemExit):
    """Leaves ``trainer.fit`` after the interrupt checkpoint; its exit code is ``128 + signum``."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(SIGNAL_EXIT_BASE + signum)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class InterruptCheckpoint(Callback):
    """Turns SIGINT, SIGTERM and ``preemption_signal`` into a ``last.ckpt`` at the current step and an exit
    with ``128 + signal`` (see the module docstring); ``preemption_signal: null`` leaves that signal alone."""

    def __init__(self, dirpath: str | os.PathLike, output_dir: str | os.PathLike | None = None,
                 signals: Sequence[str | int] = ("SIGINT", "SIGTERM"),
                 preemption_signal: str | int | None = "SIGUSR1", filename: str = "last",
                 requeue: bool = False) -> None:
        self.dirpath = Path(dirpath)
        self.requeue = requeue
        self.preemption = signal_number(preemption_signal) if preemption_signal not in (None, "", "null") else None
        self.output_dir = Path(output_dir) if output_dir is not None else self.dirpath.parent
        names = [*signals, *([preemption_signal] if preemption_signal not in (None, "", "null") else [])]
        self.signals = sorted({signal_number(s) for s in names})
        self.filename = filename
        self.received: int = 0
        self._pid = os.getpid()
        self._talk = True  # rank 0 says what happens; the other ranks stay quiet
        self._evaluating = False  # trainer.validate / test (train=false): a signal stops at once
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ handlers
    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process decides
            return
        if self._evaluating:  # train=false: no training state to keep, so stop now (not Lightning's exit 0)
            if self._talk:
                print(f"\nstopped by {signal_name(signum)} during evaluation: nothing to save", file=sys.stderr,
                      flush=True)
            raise RunInterrupted(signum, -1, None)
        if self.received and signum == signal.SIGINT:
            if self._talk:
                print(f"\n{signal_name(signum)} again: stopping at once, without a checkpoint", file=sys.stderr,
                      flush=True)
            raise RunInterrupted(signum, -1, None)
        if not self.received and self._talk:
            print(f"\n{signal_name(signum)} received: finishing the current step, then saving "
                  f"{self.dirpath / (self.filename + '.ckpt')}"
                  + (" (Ctrl-C again stops at once without it)" if signum == signal.SIGINT else ""),
                  file=sys.stderr, flush=True)
        self.received = max(self.received, signum)

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self._pid = os.getpid()
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning registered its own handlers (trainer._run), so these replace them
        self.received = 0
        self._talk = trainer.is_global_zero
        self.install()
        if trainer.ckpt_path and trainer.is_global_zero:
            log.info("resuming from step %d of %s", trainer.global_step, trainer.ckpt_path)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start_evaluation(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        self._start_evaluation(trainer)

    def _start_evaluation(self, trainer) -> None:
        if trainer.state.fn in ("validate", "test"):  # not the validation inside fit: that keeps its flag
            self._evaluating = True
            self._talk = trainer.is_global_zero
            self.install()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._evaluating:
            self._evaluating = False
            self.restore()

    on_test_end = on_validation_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        path = self.dirpath / f"{self.filename}.ckpt"
        _adopt_as_last(trainer, path)
        trainer.save_checkpoint(path, weights_only=False)  # every rank: collective (Partial FC gathers here)
        step = trainer.global_step
        if trainer.is_global_zero:
            report_signal_stop(self.output_dir, signum, step, path)
            if self.requeue and signum == self.preemption:
                requeue_slurm_job()
        self.restore()
        raise RunInterrupted(signum, step, path)

    def on_train_end(self, trainer, pl_module) -> None:
        self.restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.restore()

    def _agreed_signal(self, trainer) -> int:
        """The largest signal number any rank received (0: none); every rank calls this once a step."""
        if trainer.world_size <= 1:
            return self.received
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int32, device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def _adopt_as_last(trainer, path: Path) -> None:
    """The ``ModelCheckpoint`` that keeps ``last.ckpt`` in the same folder records ``path`` as its last
    checkpoint (saved in the file): the resumed run then goes on writing ``last.ckpt`` instead of taking
    it for a stranger's file and writing ``last-v1.ckpt`` beside it."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in getattr(trainer, "checkpoint_callbacks", []):
        if (isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath
                and Path(callback.dirpath) == path.parent
                and path.name == callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION):
            callback.last_model_path = str(path)


def report_signal_stop(output_dir: str | os.PathLike, signum: int, step: int, checkpoint: Path) -> None:
    """What a stopped run kept and the command that goes on from there."""
    from stn_face.training.progress import resume_command

    print(f"\nstopped by {signal_name(signum)} at step {step}: {checkpoint} holds step {step}. Resume with:\n"
          f"  {resume_command(output_dir)}", file=sys.stderr, flush=True)


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this Slurm job (an array task included): Slurm starts the job script again,
    which resumes when it runs ``stn-face-train ... ckpt_path=last hydra.run.dir=<a fixed folder>``.
    False (and a line saying why) outside Slurm or when scontrol fails."""
    import re
    import subprocess

    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        print("requeue=true: not a Slurm job (no SLURM_JOB_ID), nothing requeued", file=sys.stderr, flush=True)
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"could not requeue Slurm job {job}: {error}", file=sys.stderr, flush=True)
        return False
    if done.returncode:
        print(f"could not requeue Slurm job {job}: {done.stderr.strip() or done.returncode}", file=sys.stderr,
              flush=True)
        return False
    print(f"requeued Slurm job {job}: it resumes from the checkpoint when it starts again", file=sys.stderr,
          flush=True)
    return True


@contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """A Ctrl-C before training started (data preparation, model building): a one-line message and exit
    130 instead of a traceback; nothing was trained, so there is nothing to save."""
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted before the first training step: nothing to save", file=sys.stderr, flush=True)
        sys.exit(SIGNAL_EXIT_BASE + signal.SIGINT)
