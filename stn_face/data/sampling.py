"""A shuffling sampler that makes training data order a pure function of (seed, epoch, position).

Killed runs resume exactly: given the global step restored from a checkpoint, the sampler skips the
batches of the current epoch that were already trained on, and every sample carries its own
augmentation seed, so random flips do not depend on worker processes or on when a run started.
Under DDP each rank takes an interleaved share of the same permutation (no padding: the epoch is cut
to a whole number of batches on every rank).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)`` pairs for ``num_samples`` items.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; rank ``r`` of ``world_size`` takes
    positions ``r, r + world_size, ...`` of it. ``len(sampler)`` is the number of samples per rank
    per epoch (a multiple of ``batch_size``). ``start_epoch``/``start_batch`` skip what a resumed run
    already trained on (only in that first epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_epoch: int = 0, start_batch: int = 0) -> None:
        if num_samples < batch_size * world_size:
            raise ValueError(f"{num_samples} training images cannot fill one batch of {batch_size} on each of "
                             f"{world_size} process(es); lower data.batch_size")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = start_epoch
        self.start_epoch = start_epoch
        self.start_batch = start_batch
        self.batches_per_epoch = num_samples // (batch_size * world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=generator)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        positions = torch.arange(self.rank, used, self.world_size)
        if self.epoch == self.start_epoch and self.start_batch:
            positions = positions[self.start_batch * self.batch_size:]
        for position in positions.tolist():
            yield int(order[position]), int(seeds[position])
