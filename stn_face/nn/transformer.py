"""The spatial transformer: localization net + transform family + differentiable warp."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from stn_face.geometry import TransformFamily, get_transform, warp


class SpatialTransformer(nn.Module):
    """Predicts a transform per image and samples an aligned ``output_size`` face.

    ``init_scale`` sets where training starts: 1.0 samples the whole input, 0.875 its centre
    112 of 128 pixels. For the ``identity`` family there is no localization net and every image is
    sampled with that fixed centred zoom (the no-alignment baseline).

    Shapes: ``(B, C, H, W)`` -> aligned ``(B, C, *output_size)`` and matrices ``(B, 3, 3)``.
    """

    def __init__(
        self,
        transform: str | TransformFamily = "projective",
        localization: Callable[..., nn.Module] | None = None,
        output_size: Sequence[int] = (112, 112),
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.family = get_transform(transform) if isinstance(transform, str) else transform
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.init_scale = float(init_scale)
        init = self.family.init_params(self.init_scale)
        if self.family.num_params == 0:
            self.localization = None
            fixed = torch.diag(torch.tensor([self.init_scale, self.init_scale, 1.0]))
        else:
            if localization is None:
                raise ValueError(f"the {self.family.name} transform needs a localization net")
            self.localization = localization(num_params=self.family.num_params, init_params=init)
            fixed = torch.eye(3)
        self.register_buffer("fixed_matrix", fixed, persistent=False)

    @property
    def transform_name(self) -> str:
        return self.family.name

    def predict_matrix(self, images: torch.Tensor) -> torch.Tensor:
        """Output-to-input matrices ``(B, 3, 3)`` for a batch of images, always in float32."""
        if self.localization is None:
            return self.fixed_matrix.expand(images.shape[0], 3, 3)
        params = self.localization(images).float()
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.family.matrix(params)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matrix = self.predict_matrix(images)
        return warp(images, matrix, self.output_size), matrix
