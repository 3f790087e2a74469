"""The spatial transformer: localization net + transform family + differentiable sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from stn_face.errors import InputError
from stn_face.geometry import (
    TransformFamily,
    get_transform,
    sample,
    similarity_matrix,
    transform_points,
    warp,
)

#: The keys of ``init_frame``: a similarity in the input's normalised coordinates (rotation in radians).
FRAME_KEYS = ("scale", "rotation", "tx", "ty")


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


class StartViewError(InputError, ValueError):
    """A start view the transformer cannot use (``transform.init_frame``, ``transform.init_scale``): the
    message names the setting and the fix; the commands print it as one ``error:`` line."""


def frame_matrix(frame: Mapping[str, float]) -> torch.Tensor:
    """The output-to-input matrix ``(3, 3)`` of an ``init_frame``: ``{scale, rotation, tx, ty}`` (rotation in
    radians, 0 and translations 0 when left out) in the input's normalised ``[-1, 1]`` coordinates, e.g.
    where an embedder's own face chip lies in a wider crop (``experiments/pretrained_alignment/framing.py``
    measures it). ``scale`` 0.5 at ``tx = ty = 0`` is the centre half of the input. Bad values raise
    :class:`StartViewError` naming the key."""
    if not isinstance(frame, Mapping):
        raise StartViewError(f"transform.init_frame must be a mapping of {', '.join(FRAME_KEYS)}, got {frame!r}")
    unknown = sorted(set(frame) - set(FRAME_KEYS))
    if unknown:
        raise StartViewError(f"transform.init_frame has unknown key(s) {unknown}; it takes "
                             f"{', '.join(FRAME_KEYS)} (rotation in radians)")
    if "scale" not in frame:
        raise StartViewError("transform.init_frame needs a scale (half the side of the sampled square, in the "
                             "input's normalised [-1, 1] units), e.g. transform.init_frame={scale: 0.5}")
    values = {}
    for key in FRAME_KEYS:
        value = frame.get(key, 0.0)
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise StartViewError(f"transform.init_frame.{key}={value!r} must be a number") from None
        if not math.isfinite(values[key]):
            raise StartViewError(f"transform.init_frame.{key}={value!r} must be a finite number")
    if values["scale"] <= 0:
        raise StartViewError(f"transform.init_frame.scale={values['scale']} must be positive (half the side of "
                             "the sampled square, in the input's normalised units)")
    return similarity_matrix(values["scale"], values["rotation"], values["tx"], values["ty"])


def start_matrix(output_size: Sequence[int], input_size: int | Sequence[int] | None,
                 init_scale: float | None = None, init_frame: Mapping[str, float] | None = None) -> torch.Tensor:
    """The output-to-input matrix ``(3, 3)`` training starts from: the similarity of ``init_frame``
    (:func:`frame_matrix`) when given, else the centred zoom of :func:`start_scale`. Giving both
    ``init_scale`` and ``init_frame`` is refused: they say the same thing twice."""
    if init_frame is not None:
        if init_scale is not None:
            raise StartViewError(f"set transform.init_scale ({init_scale}) or transform.init_frame, not both: the "
                                 "frame's scale is the start's zoom (set transform.init_scale=null)")
        return frame_matrix(init_frame)
    scale = start_scale(output_size, input_size, init_scale)
    return torch.diag(torch.tensor([scale, scale, 1.0]))


class SpatialTransformer(nn.Module):
    """Predicts a transform per image and samples an aligned ``output_size`` face.

    Training starts from one view, the same for every family (:func:`start_matrix`): by default the
    centred zoom of :func:`start_scale`, the centre ``output_size`` pixels of an ``input_size`` input (pass
    ``input_size``; the configs take the data's ``image_size``), or ``init_scale`` when set; with
    ``init_frame`` (``{scale, rotation, tx, ty}``, :func:`frame_matrix`) the similarity it names, e.g. the
    framing a pretrained embedder was trained on, measured in a wide crop. For the ``identity`` family
    there is no localization net and every image is sampled with that fixed view (the no-alignment
    baseline). ``family_options`` go to the family (``tps``: ``grid_size``).

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
        init_frame: Mapping[str, float] | None = None,
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
        start = start_matrix(self.output_size, self.input_size, init_scale, init_frame)
        self.init_scale = (float(init_frame["scale"]) if init_frame is not None  # the start's zoom
                           else start_scale(self.output_size, self.input_size, init_scale))
        fixed = None
        if self.family.num_params == 0:
            self.localization = None
            fixed = start
        else:
            if localization is None:
                raise ValueError(f"the {self.family.name} transform needs a localization net")
            self.localization = localization(num_params=self.family.num_params,
                                             init_params=self.family.params_from_matrix(start))
        self.register_buffer("fixed_matrix", fixed, persistent=False)
        self._sampling_grid = self.family.sampling_grid  # compiled by compile_sampling_grid

    def compile_sampling_grid(self) -> None:
        """Build the sampling grid with a compiled ``family.sampling_grid`` (``model.compile``): eager, the grid
        of a projective map costs a dozen passes over ``(B, H, W, 2)`` (matrix product, division, clamping,
        and as many backward); Inductor fuses them. Measured fwd + bwd at batch 128, 112 x 112: 57-70 against
        27-32 ms on a 2-core Xeon (benchmarks/README.md). Nothing to do for the fixed ``identity`` view."""
        if self.localization is not None:
            self._sampling_grid = torch.compile(self.family.sampling_grid)

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
            grid = self._sampling_grid(params, self.output_size)
            transform = self.family.matrix(params) if self.has_matrix else params
        return sample(images, grid), transform

