"""Transform families and differentiable warping: pure functions on tensors.

Conventions (every function here follows them):

* A transform matrix ``M`` of shape ``(B, 3, 3)`` maps **output** pixel coordinates to **input**
  coordinates. Coordinates are normalised to ``[-1, 1]`` with ``align_corners=False`` semantics (the
  centre of pixel ``i`` of ``W`` sits at ``(2 i + 1) / W - 1``) and written homogeneously as
  ``(x_t, y_t, 1)``; ``x`` runs along the width, ``y`` along the height.
* Projective results are divided by ``z = θ31 x_t + θ32 y_t + 1``; ``|z|`` is kept away from zero
  (``Z_EPS``) and the resulting coordinates are clamped, so no NaN or Inf can come out for finite
  parameters.
* Parameters are ``(B, P)`` tensors; each family knows its ``num_params`` (0, 4, 6, 8).

The four families are those of Zhong et al., "Toward End-to-End Face Recognition through Alignment
Learning": identity, similarity ``(λ, α, t1, t2)`` as ``[[λcosα, −λsinα, t1], [λsinα, λcosα, t2]]``,
affine ``(θ11, θ12, θ13, θ21, θ22, θ23)`` and projective ``(θ11 … θ32)`` with ``θ33 = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Z_EPS = 1e-3  # smallest |z| allowed in the projective division
COORD_LIMIT = 4.0  # sampling coordinates are clamped to [-4, 4]: far outside the image, still finite


class TransformFamily:
    """A family of 2-D transforms with a fixed number of parameters.

    Subclasses implement :meth:`_matrix` and :meth:`init_params`; ``matrix`` checks shapes.
    """

    name: str = ""
    num_params: int = 0

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        """Parameters ``(P,)`` of a centred zoom by ``scale`` (1.0 is the identity)."""
        raise NotImplementedError

    def identity_params(self) -> torch.Tensor:
        """Parameters ``(P,)`` of the identity transform."""
        return self.init_params(1.0)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """Map parameters ``(B, P)`` to output-to-input matrices ``(B, 3, 3)``."""
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{self.name} transform expects parameters of shape (B, {self.num_params}), "
                f"got {tuple(params.shape)}"
            )
        return self._matrix(params)

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_params={self.num_params})"


def _rows_to_matrix(top: torch.Tensor, bottom: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the first two rows ``(B, 6)`` and the last row ``(B, 2)`` (default 0, 0) into ``(B, 3, 3)``."""
    batch = top.shape[0]
    if bottom is None:
        bottom = top.new_zeros(batch, 2)
    last = torch.cat([bottom, top.new_ones(batch, 1)], dim=1)
    return torch.cat([top.reshape(batch, 2, 3), last.reshape(batch, 1, 3)], dim=1)


class IdentityTransform(TransformFamily):
    """No parameters: every image is sampled with the identity matrix (or a fixed zoom)."""

    name = "identity"
    num_params = 0

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.zeros(0)

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return torch.eye(3, dtype=params.dtype, device=params.device).expand(params.shape[0], 3, 3).clone()


class SimilarityTransform(TransformFamily):
    """Scale ``λ``, rotation ``α`` (radians) and translation ``(t1, t2)``: 4 parameters."""

    name = "similarity"
    num_params = 4

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0])

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        lam, alpha, t1, t2 = params.unbind(dim=1)
        cos, sin = lam * torch.cos(alpha), lam * torch.sin(alpha)
        return _rows_to_matrix(torch.stack([cos, -sin, t1, sin, cos, t2], dim=1))


class AffineTransform(TransformFamily):
    """A general affine map ``(θ11, θ12, θ13, θ21, θ22, θ23)``: 6 parameters."""

    name = "affine"
    num_params = 6

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0])

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return _rows_to_matrix(params)


class ProjectiveTransform(TransformFamily):
    """A homography ``(θ11, θ12, θ13, θ21, θ22, θ23, θ31, θ32)`` with ``θ33 = 1``: 8 parameters."""

    name = "projective"
    num_params = 8

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0, 0.0, 0.0])

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return _rows_to_matrix(params[:, :6], params[:, 6:])


TRANSFORMS: dict[str, type[TransformFamily]] = {
    cls.name: cls for cls in (IdentityTransform, SimilarityTransform, AffineTransform, ProjectiveTransform)
}


def get_transform(name: str) -> TransformFamily:
    """The transform family called ``name`` (``identity``, ``similarity``, ``affine``, ``projective``)."""
    try:
        return TRANSFORMS[name]()
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}") from None


def normalized_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates ``(H*W, 3)`` of an ``height x width`` image, in ``[-1, 1]``.

    ``align_corners=False``: pixel ``i`` of ``n`` sits at ``(2 i + 1) / n - 1``. Rows are in
    raster order (y major), each ``(x, y, 1)``.
    """
    ys = (torch.arange(height, dtype=dtype, device=device) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=dtype, device=device) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).reshape(-1, 3)


def safe_denominator(z: torch.Tensor, eps: float = Z_EPS) -> torch.Tensor:
    """``z`` with ``|z| >= eps`` (sign kept, 0 treated as positive): the projective division never blows up."""
    sign = torch.where(z < 0, -torch.ones_like(z), torch.ones_like(z))
    return torch.where(z.abs() < eps, sign * eps, z)


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply matrices ``(B, 3, 3)`` to normalised points ``(B, N, 2)`` or ``(N, 2)``; returns ``(B, N, 2)``.

    The projective division uses :func:`safe_denominator`; results are clamped to ``±COORD_LIMIT``
    and NaNs (only possible from non-finite matrices) become 0, so the output is always finite.
    """
    if points.ndim == 2:
        points = points.unsqueeze(0).expand(matrix.shape[0], -1, -1)
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    mapped = homogeneous @ matrix.transpose(1, 2)  # (B, N, 3)
    xy = mapped[..., :2] / safe_denominator(mapped[..., 2:])
    return torch.nan_to_num(xy, nan=0.0).clamp(-COORD_LIMIT, COORD_LIMIT)


def sampling_grid(matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The ``grid_sample`` grid ``(B, H, W, 2)`` of input coordinates for an output of ``size = (H, W)``."""
    height, width = int(size[0]), int(size[1])
    base = normalized_grid(height, width, dtype=matrix.dtype, device=matrix.device)[:, :2]
    return transform_points(matrix, base).reshape(matrix.shape[0], height, width, 2)


def warp(images: torch.Tensor, matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Sample ``images (B, C, H, W)`` through ``matrix (B, 3, 3)`` into ``(B, C, size[0], size[1])``.

    Bilinear, zeros outside the input, computed in float32 (float64 inputs stay float64) even under
    autocast. The matrix maps output to input coordinates (see the module
    docstring). With the identity matrix and ``size == (H, W)`` the input comes back unchanged.
    """
    if images.ndim != 4:
        raise ValueError(f"warp expects images of shape (B, C, H, W), got {tuple(images.shape)}")
    if matrix.shape != (images.shape[0], 3, 3):
        raise ValueError(f"warp expects matrices of shape ({images.shape[0]}, 3, 3), got {tuple(matrix.shape)}")
    height, width = int(size[0]), int(size[1])
    if (height, width) == tuple(images.shape[-2:]) and not matrix.requires_grad and bool(
            (matrix == torch.eye(3, dtype=matrix.dtype, device=matrix.device)).all()):
        # Exact identity: float32 pixel-centre coordinates would be off by a few 1e-6 of a pixel.
        return images.clone()
    # Sampling coordinates need float32 at least: autocast (bf16/fp16) is switched off in here and
    # low-precision images are sampled in float32.
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=images.device.type, enabled=False):
        grid = sampling_grid(matrix.to(dtype), (height, width))
        return F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def corners(matrix: torch.Tensor) -> torch.Tensor:
    """Where the output image's four corners come from in the input: ``(B, 4, 2)`` normalised points.

    Order: top-left, top-right, bottom-right, bottom-left (a closed quadrilateral when drawn).
    """
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=matrix.dtype,
                          device=matrix.device)
    return transform_points(matrix, square)


def decompose(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Readable statistics of matrices ``(B, 3, 3)``, each a ``(B,)`` tensor.

    The linear part ``A = [[a, b], [c, d]]`` is written ``A = R(rotation) @ [[scale_x, k], [0, scale_y]]``
    (a QR decomposition); ``shear = k / scale_y``; ``scale`` is ``sqrt(|det A|)``; ``perspective`` is
    the norm of ``(θ31, θ32)``; ``tx, ty`` the translation. For a similarity, ``scale = λ`` and
    ``rotation = α`` exactly.
    """
    a, b, c, d = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1]
    scale_x = torch.sqrt(a * a + c * c)
    det = a * d - b * c
    safe_sx = scale_x.clamp_min(1e-12)
    scale_y = det / safe_sx
    k = (a * b + c * d) / safe_sx
    return {
        "scale": det.abs().sqrt(),
        "scale_x": scale_x,
        "scale_y": scale_y,
        "rotation": torch.atan2(c, a),
        "shear": k / torch.where(scale_y.abs() < 1e-12, torch.ones_like(scale_y), scale_y),
        "perspective": torch.sqrt(matrix[:, 2, 0] ** 2 + matrix[:, 2, 1] ** 2),
        "tx": matrix[:, 0, 2],
        "ty": matrix[:, 1, 2],
    }


def normalized_to_pixel(height: int, width: int, dtype=torch.float64) -> torch.Tensor:
    """The ``(3, 3)`` matrix taking normalised ``align_corners=False`` coordinates to pixel coordinates.

    Pixel coordinates put the centre of the top-left pixel at ``(0, 0)`` (OpenCV's convention):
    ``u = ((x + 1) W - 1) / 2``.
    """
    return torch.tensor(
        [[width / 2, 0.0, (width - 1) / 2], [0.0, height / 2, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype
    )


def to_pixel_points(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised ``align_corners=False`` points ``(..., 2)`` to pixel coordinates with pixel centres
    at integers (OpenCV, matplotlib): ``u = ((x + 1) W - 1) / 2``, ``v = ((y + 1) H - 1) / 2``."""
    scale = points.new_tensor([width, height])
    return ((points + 1) * scale - 1) / 2


def to_pixel_homography(matrix: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int]) -> torch.Tensor:
    """Convert normalised output-to-input matrices ``(B, 3, 3)`` to pixel ones (OpenCV ``WARP_INVERSE_MAP``)."""
    to_in = normalized_to_pixel(in_size[0], in_size[1], matrix.dtype).to(matrix.device)
    from_out = torch.linalg.inv(normalized_to_pixel(out_size[0], out_size[1], matrix.dtype)).to(matrix.device)
    return to_in @ matrix @ from_out


def rotation_degrees(radians: torch.Tensor) -> torch.Tensor:
    return radians * (180.0 / math.pi)
