"""Margin heads: one combined-margin softmax covers ArcFace, CosFace, SphereFace-style and softmax.

The target logit is ``s * (cos(m1 * θ + m2) - m3)``, the others ``s * cos θ`` (insightface's
combined margin): ArcFace is ``m2 = 0.5``; CosFace ``m3 = 0.35``; SphereFace-style ``m1 = 1.35``;
plain normalised softmax ``m1 = 1, m2 = m3 = 0``; ``normalize=False`` gives an ordinary linear
softmax classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CombinedMarginHead(nn.Module):
    """Class-centre classifier with a combined angular margin.

    Shapes: embeddings ``(B, D)``, labels ``(B,)`` -> logits ``(B, num_classes)``.
    ``margin_factor`` in [0, 1] scales the margins (0 during a softmax warm-up).
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m1: float = 1.0,
                 m2: float = 0.5, m3: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier head needs at least 2 classes, got {num_classes}")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.normalize = normalize
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.bias = None if normalize else nn.Parameter(torch.zeros(num_classes))

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                margin_factor: float = 1.0) -> torch.Tensor:
        embeddings = embeddings.float()
        if not self.normalize:
            return F.linear(embeddings, self.weight, self.bias)
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1.0, 1.0)
        if labels is None or margin_factor == 0 or (self.m1 == 1 and self.m2 == 0 and self.m3 == 0):
            return self.s * cosine
        m1 = 1.0 + (self.m1 - 1.0) * margin_factor
        m2, m3 = self.m2 * margin_factor, self.m3 * margin_factor
        target_cos = cosine.gather(1, labels.view(-1, 1)).squeeze(1)
        theta = torch.acos(target_cos.clamp(-1 + 1e-7, 1 - 1e-7))
        margin_theta = m1 * theta + m2
        # Past π the margin function stops decreasing; there use a linear penalty instead so the
        # target logit keeps falling as θ grows (insightface's "easy margin" fallback).
        target = torch.where(
            margin_theta <= math.pi,
            torch.cos(margin_theta) - m3,
            target_cos - m2 * math.sin(m2) - m3 - (m1 - 1.0) * theta,
        )
        logits = cosine.scatter(1, labels.view(-1, 1), target.unsqueeze(1).to(cosine.dtype))
        return self.s * logits
