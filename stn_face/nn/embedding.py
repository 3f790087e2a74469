"""The embedding network (spatial transformer + backbone) and the paper's flip-sum test feature."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingNet(nn.Module):
    """Spatial transformer + backbone: normalised images ``(B, 3, S, S)`` -> raw embeddings ``(B, D)``
    (not normalised, no flip). This is what ``stn-face-export`` writes."""

    def __init__(self, transformer: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        aligned, _ = self.transformer(images)
        return self.backbone(aligned).float()


def flip_sum(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The paper's test feature: the normalised embedding of each image plus that of its mirror image,
    re-normalised. ``embed`` maps ``(B, 3, H, W)`` to ``(B, D)``; both halves go through it as one batch
    of ``2B``. Returns ``(B, D)``."""
    first, mirrored = embed(torch.cat([images, images.flip(-1)])).chunk(2)
    return F.normalize(F.normalize(first) + F.normalize(mirrored))
