"""The spatial transformer: localization net + transform family + differentiable sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from stn_face.geometry import TransformFamily, get_transform, sample, transform_points, warp


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def start_scale(output_size: Sequence[int], input_size: int | Sequence[int] | None,
                init_scale: float | None = None) -> float:
    """The centred zoom training starts from: ``init_scale`` when given, else ``output / input`` (the
    centre ``output_size`` pixels of an ``input_size`` crop, one input pixel per output pixel: 112 of
    128 is 0.875, 112 of 144 is 0.778), else 1.0 (the whole input)."""
    if init_scale is not None:
        return float(init_scale)
    if input_size is None:
        return 1.0
    (out_h, out_w), (in_h, in_w) = _pair(output_size), _pair(input_size)
    if out_h * in_w != out_w * in_h:
        raise ValueError(f"output {out_h}x{out_w} and input {in_h}x{in_w} have different aspect ratios: "
                         "no centred zoom maps one onto the other; set init_scale")
    return out_w / in_w


class SpatialTransformer(nn.Module):
    """Predicts a transform per image and samples an aligned ``output_size`` face.

    Training starts from a centred zoom, the same for every family (:func:`start_scale`): by default the
    centre ``output_size`` pixels of an ``input_size`` input (pass ``input_size``; the configs take the
    data's ``image_size``), or ``init_scale`` when set. For the ``identity`` family there is no
    localization net and every image is sampled with that fixed zoom (the no-alignment baseline).
    ``family_options`` go to the family (``tps``: ``grid_size``).

    Every learned family is handled alike: localization net -> parameters ``(B, P)`` ->
    ``family.sampling_grid`` -> bilinear sampling.

    Shapes: ``(B, C, H, W)`` -> aligned ``(B, C, *output_size)`` and the transform: output-to-input
    matrices ``(B, 3, 3)`` for the linear families (:attr:`has_matrix`), the parameters ``(B, P)`` for the
    others (``tps``: where each control point lands). :meth:`map_points` takes either.
    """

    def __init__(
        self,
        transform: str | TransformFamily = "projective",
        localization: Callable[..., nn.Module] | None = None,
        output_size: Sequence[int] = (112, 112),
        input_size: int | Sequence[int] | None = None,
        init_scale: float | None = None,
        **family_options,
    ) -> None:
        super().__init__()
        if isinstance(transform, str):
            self.family = get_transform(transform, **family_options)
        elif family_options:
            raise ValueError(f"family options {sorted(family_options)} need a transform name, not {transform!r}")
        else:
            self.family = transform
        self.output_size = _pair(output_size)
        self.input_size = None if input_size is None else _pair(input_size)
        self.init_scale = start_scale(self.output_size, self.input_size, init_scale)
        fixed = None
        if self.family.num_params == 0:
            self.localization = None
            fixed = torch.diag(torch.tensor([self.init_scale, self.init_scale, 1.0]))
        else:
            if localization is None:
                raise ValueError(f"the {self.family.name} transform needs a localization net")
            self.localization = localization(num_params=self.family.num_params,
                                             init_params=self.family.init_params(self.init_scale))
        self.register_buffer("fixed_matrix", fixed, persistent=False)

    @property
    def transform_name(self) -> str:
        return self.family.name

    @property
    def has_matrix(self) -> bool:
        """Whether the transform this module returns is a ``(B, 3, 3)`` matrix (the linear families)."""
        return self.family.linear

    def predict_params(self, images: torch.Tensor) -> torch.Tensor:
        """The family's parameters ``(B, P)`` for a batch of images, always in float32 (``(B, 0)`` for
        ``identity``)."""
        if self.localization is None:
            return images.new_zeros(images.shape[0], 0, dtype=torch.float32)
        return self.localization(images).float()

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        if self.fixed_matrix is not None:
            return self.fixed_matrix.expand(params.shape[0], 3, 3)
        return self.family.matrix(params)

    def predict_matrix(self, images: torch.Tensor) -> torch.Tensor:
        """Output-to-input matrices ``(B, 3, 3)`` for a batch of images (linear families only), float32."""
        if not self.has_matrix:
            raise ValueError(f"the {self.family.name} transform has no matrix; use predict_params and "
                             "map_points")
        params = self.predict_params(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self._matrix(params)

    def map_points(self, transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Input positions ``(B, N, 2)`` of normalised output points ``(N, 2)`` under a transform as
        :meth:`forward` returns it (matrices or parameters): e.g. ``geometry.square_outline`` gives where
        the aligned face is sampled from."""
        if self.has_matrix:
            return transform_points(transform, points.to(transform.dtype))
        return self.family.map_points(transform, points.to(transform.dtype))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.predict_params(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            if self.localization is None:  # the fixed start view; at scale 1 an exact copy
                matrix = self._matrix(params)
                return warp(images, matrix, self.output_size), matrix
            grid = self.family.sampling_grid(params, self.output_size)
            transform = self.family.matrix(params) if self.has_matrix else params
        return sample(images, grid), transform

