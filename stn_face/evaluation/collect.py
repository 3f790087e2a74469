"""Gathering evaluation features across DDP ranks without DistributedSampler's padding duplicates."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class FeatureCollector(Metric):
    """Collects ``(index, feature)`` rows on every rank; :meth:`compute` returns the features of
    indices ``0 .. n-1`` in order, each once.

    DistributedSampler pads the last batch by repeating samples so every rank gets as many; the
    repeats carry an index already seen and are dropped here. States are concatenated across ranks
    (``dist_reduce_fx="cat"``), which works on gloo where ``all_gather`` of uneven tensors does not.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(sync_on_compute=True)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        self.indices.append(indices.detach().long().reshape(-1))
        self.features.append(features.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unique sorted indices (N,), features (N, D))``."""
        indices = self.indices if isinstance(self.indices, torch.Tensor) else torch.cat(self.indices)
        features = self.features if isinstance(self.features, torch.Tensor) else torch.cat(self.features)
        order = torch.argsort(indices, stable=True)
        indices, features = indices[order], features[order]
        keep = torch.ones_like(indices, dtype=torch.bool)
        keep[1:] = indices[1:] != indices[:-1]
        return indices[keep], features[keep]
