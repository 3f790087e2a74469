"""The two training loops a benchmark compares: :class:`StnFaceModule` under a real ``lightning.Trainer``,
and a bare PyTorch loop that calls the module's own optimisation pieces, so that the two differ only by
Lightning (its loop, hooks, logging and precision plugin).

Both take a ``sync`` callable that is called where a clock is read (``torch.cuda.synchronize`` on a GPU,
nothing on the CPU), only at the first timed step and after the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from benchmarks.common import autocast, clock, since


def no_sync() -> None:
    """The CPU's ``sync``: its clocks need no waiting."""


class CycledBatches:
    """``length`` batches cycling through a list: an iterable Lightning treats as one dataloader."""

    def __init__(self, batches: Sequence, length: int) -> None:
        self.batches, self.length = list(batches), length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.length))


class BareTrainer:
    """A plain PyTorch loop over a :class:`StnFaceModule`: its ``configure_optimizers`` (the parameter
    groups, the optimiser and the per-step schedule), ``training_loss`` at ``margin_factor(step)``, then
    ``drop_non_finite_gradients`` and ``clip_localization_gradients`` where Lightning calls
    ``on_before_optimizer_step``. What it leaves out is Lightning's: the loop, hooks and ``self.log``.
    ``precision`` is applied as Lightning's precision plugin does (autocast; a GradScaler for 16-mixed)."""

    def __init__(self, model, precision: str = "32-true", scaler: Any = None) -> None:
        self.model = model
        self.precision = precision
        self.scaler = scaler  # a torch.amp.GradScaler for 16-mixed
        config = model.configure_optimizers()
        if isinstance(config, dict):
            self.optimizer = config["optimizer"]
            self.scheduler = config["lr_scheduler"]["scheduler"]
        else:
            self.optimizer, self.scheduler = config, None
        self.step_count = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        with autocast(self.precision, images.device.type):
            loss = model.training_loss(images, labels, model.margin_factor(self.step_count))[0]
        # Lightning's order: forward, zero_grad, backward, (unscale), the pre-step hook, step, schedule
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if not model.drop_non_finite_gradients(self.optimizer):
            model.clip_localization_gradients()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        return loss.detach()


def bare_run(
    trainer: BareTrainer, batches: Iterable, warmup: int, sync: Callable[[], None] = no_sync
) -> tuple[float, float, int]:
    """Train on every batch; returns (wall s, CPU s, images) of the steps after the first ``warmup``."""
    start, images_timed = None, 0
    for index, (images, labels) in enumerate(batches):
        if index == warmup:
            sync()
            start = clock()
        trainer.step(images, labels)
        if index >= warmup:
            images_timed += images.shape[0]
    if start is None:
        raise ValueError(f"bare_run needs more than warmup={warmup} batches")
    sync()
    wall, cpu = since(start)
    return wall, cpu, images_timed


def lightning_trainer(
    total_steps: int,
    precision: str,
    log_every_n_steps: int,
    accelerator: str = "cpu",
    callbacks: Sequence = (),
    benchmark: bool = False,
):
    """A real ``lightning.Trainer`` for ``total_steps`` steps on one device: no logger, progress bar,
    checkpointing or validation (they are the run's, not the framework's per-step cost)."""
    import lightning as L

    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=total_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=log_every_n_steps,
        callbacks=list(callbacks),
        deterministic=False,
        benchmark=benchmark,
    )


def lightning_run(
    model,
    batches: Sequence,
    steps: int,
    warmup: int,
    precision: str,
    log_every_n_steps: int,
    accelerator: str = "cpu",
    sync: Callable[[], None] = no_sync,
    benchmark: bool = False,
) -> tuple[float, float, int]:
    """Fit ``model`` for ``warmup + steps`` steps under a real Trainer; returns (wall s, CPU s, images) of
    the steps after the warm-up, from the first timed batch's start hook to the last batch's end hook.
    Lightning moves the model back to the CPU when the fit ends."""
    import lightning as L

    total = warmup + steps

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.start = self.end = (0.0, 0.0)
            self.images = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == warmup:
                sync()
                self.start = clock()
            if batch_idx >= warmup:
                self.images += batch[0].shape[0]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == total - 1:
                sync()
                self.end = clock()

    timer = Clock()
    trainer = lightning_trainer(total, precision, log_every_n_steps, accelerator, [timer], benchmark)
    trainer.fit(model, train_dataloaders=CycledBatches(batches, total))
    return timer.end[0] - timer.start[0], timer.end[1] - timer.start[1], timer.images
