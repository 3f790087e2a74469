"""Fault injection for reliability tests (loaded by the CLI through `+callbacks.fault._target_=...`)."""

from __future__ import annotations

import lightning as L


class RaiseOnRank(L.Callback):
    """Raise ``RuntimeError`` on one rank at one training step: a crash of a single DDP process."""

    def __init__(self, rank: int = 1, step: int = 2) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            raise RuntimeError(f"injected fault on rank {self.rank} at step {trainer.global_step}")
