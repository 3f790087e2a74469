"""Margin heads: one combined-margin softmax covers ArcFace, CosFace, SphereFace-style and softmax.

The target logit is ``s * (cos(m1 * θ + m2) - m3)``, the others ``s * cos θ`` (insightface's
combined margin): ArcFace is ``m2 = 0.5``; CosFace ``m3 = 0.35``; SphereFace-style ``m1 = 1.35``;
plain normalised softmax ``m1 = 1, m2 = m3 = 0``; ``normalize=False`` gives an ordinary linear
softmax classifier. Past ``m1 θ + m2 = π`` the cosine would rise again; :func:`margin_target` says
what replaces it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Margin = float | torch.Tensor  # one number, or one per sample (B,) for adaptive heads (nn/adaface.py)


def margin_target(theta: torch.Tensor, cosine: torch.Tensor, m1: float, m2: Margin, m3: Margin,
                  multiplicative: bool) -> torch.Tensor:
    """The target class's margin cosine for angles ``theta`` (any shape, ``cosine = cos theta``).
    ``m2`` and ``m3`` are numbers or tensors broadcasting with ``theta`` (per-sample margins).

    ``cos(m1 θ + m2) - m3`` while ``m1 θ + m2 <= π``; past that point it would rise again, so:

    * ``multiplicative=False`` (ArcFace, CosFace: ``m1 = 1``): ``cos θ - m2 sin m2 - m3``, insightface's
      ArcFace with ``easy_margin=False`` (a CosFace-like penalty; it is decreasing, and steps down by
      ``cos m2 - 1 + m2 sin m2``, 0.117 for ``m2 = 0.5``, at the switch, as insightface does).
    * ``multiplicative=True`` (SphereFace-style ``m1 > 1``): SphereFace's
      ``ψ = (-1)^k cos(m1 θ + m2) - 2k``, ``k = ⌊(m1 θ + m2) / π⌋`` (Liu et al. 2017, there for integer
      ``m1``), for any real ``m1``: continuous and decreasing over θ in [0, π].
    """
    margin_theta = m1 * theta + m2
    if multiplicative:
        k = torch.floor(margin_theta / math.pi)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        return sign * torch.cos(margin_theta) - 2.0 * k - m3
    # A negative m2 (AdaFace's angular margin for high-quality faces) may take the angle below 0,
    # where the cosine would fall again: it stops at 0 (cosine 1), as AdaFace clips it.
    sin_m2 = torch.sin(m2) if torch.is_tensor(m2) else math.sin(m2)
    return torch.where(margin_theta <= math.pi, torch.cos(margin_theta.clamp_min(0.0)),
                       cosine - m2 * sin_m2) - m3


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
        return margin_logits(cosine, labels, self.s, self.m1, self.m2, self.m3, margin_factor)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, margin_factor: float = 1.0,
             step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(B, D)``, labels ``(B,)`` -> (cross-entropy, ``(B,)`` bool: top logit is the label).
        ``step`` is unused (heads that sample classes draw from it)."""
        logits = self(embeddings, labels, margin_factor=margin_factor)
        with torch.no_grad():
            correct = logits.argmax(1) == labels
        return F.cross_entropy(logits, labels), correct


def margin_logits(cosine: torch.Tensor, columns: torch.Tensor | None, s: float, m1: float, m2: Margin,
                  m3: Margin, margin_factor: float = 1.0) -> torch.Tensor:
    """``s`` times ``cosine`` ``(B, K)`` with the combined margin (scaled by ``margin_factor``) on each row's
    target column ``columns`` ``(B,)``; a row whose target is not among the ``K`` columns (``-1``: a class
    centre held by another rank, :mod:`stn_face.nn.partial_fc`) keeps its plain cosines. ``m2``/``m3``
    may be ``(B,)`` tensors: one margin per row (AdaFace)."""
    no_margin = m1 == 1 and not torch.is_tensor(m2) and not torch.is_tensor(m3) and m2 == 0 and m3 == 0
    if columns is None or margin_factor == 0 or no_margin:
        return s * cosine
    multiplicative = m1 != 1.0
    m1 = 1.0 + (m1 - 1.0) * margin_factor
    m2, m3 = m2 * margin_factor, m3 * margin_factor
    index = columns.clamp_min(0).view(-1, 1)
    target_cos = cosine.gather(1, index).squeeze(1)
    theta = torch.acos(target_cos.clamp(-1 + 1e-7, 1 - 1e-7))
    target = margin_target(theta, target_cos, m1, m2, m3, multiplicative=multiplicative)
    target = torch.where(columns >= 0, target.to(cosine.dtype), target_cos)
    return s * cosine.scatter(1, index, target.unsqueeze(1))
