"""AdaFace: a margin that adapts to image quality through the feature norm (Kim, Jain and Liu, CVPR 2022).

The norm of an embedding is a proxy for the quality of its face image. Each sample's norm ``‖z_i‖``
(detached, clipped to [0.001, 100]) is standardised with the running batch statistics,
``ẑ_i = clip(h · (‖z_i‖ - μ) / (σ + ε), -1, 1)``, and sets the margins of the target logit:

    target = s · (cos(θ_y + g_angle) - g_add),   g_angle = -m · ẑ_i,   g_add = m · ẑ_i + m

(paper, eq. 11-12). A high-norm (good) face gets ArcFace-like emphasis on hard samples (the
angular margin), a low-norm face CosFace-like (the additive one); ``ẑ = 0`` gives CosFace with ``m``.
μ and σ are exponential moving averages of the batch mean and standard deviation of the norms,
``μ ← α μ_B + (1 - α) μ``, kept as buffers so checkpoints carry them; they move in training mode
only. Defaults are the paper's: ``m = 0.4``, ``h = 0.333``, ``s = 64``, ``α = 0.01``, and the
reference implementation's start values μ = 20, σ = 100.

The margin itself is the combined margin of :mod:`stn_face.nn.heads` with per-sample ``m2 = g_angle``
and ``m3 = g_add``: one copy of the margin code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stn_face.nn.heads import CombinedMarginHead, margin_logits


def quality_scaler(norms: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, h: float,
                   eps: float = 1e-3) -> torch.Tensor:
    """``ẑ = clip(h (‖z‖ - μ) / (σ + eps), -1, 1)`` for norms ``(B,)`` -> ``(B,)``."""
    return (h * (norms - mean) / (std + eps)).clamp(-1.0, 1.0)


def adaface_margins(scaler: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (``g_angle``, ``g_add``) = ``(-m ẑ, m ẑ + m)`` for ``ẑ`` ``(B,)``."""
    return -m * scaler, m * scaler + m


class AdaFaceHead(CombinedMarginHead):
    """Class centres with AdaFace's quality-adaptive margin.

    Shapes: embeddings ``(B, D)`` (not normalised: their norms are the quality signal), labels
    ``(B,)`` -> logits ``(B, num_classes)``. ``margin_factor`` in [0, 1] scales both margins.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.4,
                 h: float = 0.333, t_alpha: float = 0.01, eps: float = 1e-3) -> None:
        super().__init__(embedding_size, num_classes, s=s, m1=1.0, m2=0.0, m3=m, normalize=True)
        if not 0.0 < t_alpha <= 1.0:
            raise ValueError(f"head.t_alpha must lie in (0, 1], got {t_alpha}")
        if h <= 0:
            raise ValueError(f"head.h must be positive, got {h}")
        self.m, self.h, self.t_alpha, self.eps = float(m), float(h), float(t_alpha), float(eps)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def update_statistics(self, norms: torch.Tensor) -> None:
        """One EMA step of μ and σ from a batch of norms ``(B,)`` (B >= 2)."""
        if norms.numel() < 2:
            return
        a = self.t_alpha
        self.batch_mean.mul_(1 - a).add_(a * norms.mean())
        self.batch_std.mul_(1 - a).add_(a * norms.std())

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                margin_factor: float = 1.0) -> torch.Tensor:
        embeddings = embeddings.float()
        norms = embeddings.detach().norm(dim=1).clamp(0.001, 100.0)
        if self.training and labels is not None:
            with torch.no_grad():
                self.update_statistics(norms)
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1.0, 1.0)
        if labels is None:
            return self.s * cosine
        g_angle, g_add = adaface_margins(quality_scaler(norms, self.batch_mean, self.batch_std, self.h, self.eps),
                                         self.m)
        return margin_logits(cosine, labels, self.s, 1.0, g_angle, g_add, margin_factor)
