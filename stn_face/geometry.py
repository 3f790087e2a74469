"""Transform families and differentiable warping: pure functions on tensors.

Conventions (every function here follows them):

* Every map goes from **output** coordinates to **input** coordinates. Coordinates are normalised to
  ``[-1, 1]`` with ``align_corners=False`` semantics (the centre of pixel ``i`` of ``W`` sits at
  ``(2 i + 1) / W - 1``); ``x`` runs along the width, ``y`` along the height. A sampling grid
  ``(B, H, W, 2)`` holds the input ``(x, y)`` of every output pixel, the layout ``grid_sample`` takes.
* Parameters are ``(B, P)`` tensors; each family knows its ``num_params``, ``identity_params()`` and
  ``sampling_grid(params, size)``. The linear families (identity, similarity, affine, projective:
  0, 4, 6, 8 parameters) also give ``matrix(params)``, ``(B, 3, 3)`` acting on ``(x_t, y_t, 1)``.
* Projective results are divided by ``z = θ31 x_t + θ32 y_t + 1``; ``|z|`` is kept away from zero
  (``Z_EPS``) and every mapped coordinate is clamped to ``±COORD_LIMIT``, so no NaN or Inf can come
  out for finite parameters.

The linear families are those of Tang et al., "An End-to-End Face Recognition Method with Alignment
Learning" (Optik, 2020): identity, similarity ``(λ, α, t1, t2)`` as
``[[λcosα, −λsinα, t1], [λsinα, λcosα, t2]]``, affine ``(θ11, θ12, θ13, θ21, θ22, θ23)`` and projective
``(θ11 … θ32)`` with ``θ33 = 1``. The paper notes that a spatial transformer can also learn a
thin-plate spline; ``tps`` is that step past it: a K x K grid of control points whose input positions
are the parameters, interpolated in closed form (Bookstein 1989).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Z_EPS = 1e-3  # smallest |z| allowed in the projective division
COORD_LIMIT = 4.0  # sampling coordinates are clamped to [-4, 4]: far outside the image, still finite


class TransformFamily:
    """A family of 2-D output-to-input maps with a fixed number of parameters.

    Subclasses implement :meth:`init_params` and :meth:`map_points`; :meth:`sampling_grid` evaluates the
    map at every output pixel centre.
    """

    name: str = ""
    num_params: int = 0
    linear: bool = False  # True: the map is a (B, 3, 3) matrix, see LinearFamily

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        """Parameters ``(P,)`` of a centred zoom by ``scale`` (1.0 is the identity)."""
        raise NotImplementedError

    def identity_params(self) -> torch.Tensor:
        """Parameters ``(P,)`` of the identity transform."""
        return self.init_params(1.0)

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """Parameters ``(P,)`` of this family's map equal to the output-to-input matrix ``(3, 3)``, e.g. a
        :func:`similarity_matrix` to start training from. Raises ``ValueError`` when the family cannot
        express it (a rotation for ``identity``, a shear for ``similarity``)."""
        raise NotImplementedError

    def check_params(self, params: torch.Tensor) -> None:
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{self.name} transform expects parameters of shape (B, {self.num_params}), "
                f"got {tuple(params.shape)}"
            )

    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Input positions ``(B, N, 2)`` of normalised output points ``(N, 2)`` or ``(B, N, 2)``."""
        raise NotImplementedError

    def sampling_grid(self, params: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The ``grid_sample`` grid ``(B, H, W, 2)``: input ``(x, y)`` of every pixel of an output of
        ``size = (H, W)``, for parameters ``(B, P)``."""
        height, width = int(size[0]), int(size[1])
        pixels = normalized_grid(height, width, dtype=params.dtype, device=params.device)[:, :2]
        return self.map_points(params, pixels).reshape(params.shape[0], height, width, 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_params={self.num_params})"


class LinearFamily(TransformFamily):
    """A family whose maps are ``(B, 3, 3)`` matrices; subclasses implement :meth:`_matrix`."""

    linear = True

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """Map parameters ``(B, P)`` to output-to-input matrices ``(B, 3, 3)``."""
        self.check_params(params)
        return self._matrix(params)

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return transform_points(self.matrix(params), points)

    def sampling_grid(self, params: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return grid_from_matrix(self.matrix(params), size)


def _rows_to_matrix(top: torch.Tensor, bottom: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the first two rows ``(B, 6)`` and the last row ``(B, 2)`` (default 0, 0) into ``(B, 3, 3)``."""
    batch = top.shape[0]
    if bottom is None:
        bottom = top.new_zeros(batch, 2)
    last = torch.cat([bottom, top.new_ones(batch, 1)], dim=1)
    return torch.cat([top.reshape(batch, 2, 3), last.reshape(batch, 1, 3)], dim=1)


class IdentityTransform(LinearFamily):
    """No parameters: every image is sampled with the identity matrix (or a fixed zoom)."""

    name = "identity"
    num_params = 0

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.zeros(0)

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        _check_start_matrix(matrix, self.name, torch.eye(3, dtype=matrix.dtype, device=matrix.device))
        return torch.zeros(0)

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return torch.eye(3, dtype=params.dtype, device=params.device).expand(params.shape[0], 3, 3).clone()


class SimilarityTransform(LinearFamily):
    """Scale ``λ``, rotation ``α`` (radians) and translation ``(t1, t2)``: 4 parameters."""

    name = "similarity"
    num_params = 4

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0])

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        a, c = matrix[0, 0], matrix[1, 0]
        params = torch.stack([torch.sqrt(a * a + c * c), torch.atan2(c, a), matrix[0, 2], matrix[1, 2]])
        _check_start_matrix(matrix, self.name, self._matrix(params.unsqueeze(0))[0])
        return params.float()

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        lam, alpha, t1, t2 = params.unbind(dim=1)
        cos, sin = lam * torch.cos(alpha), lam * torch.sin(alpha)
        return _rows_to_matrix(torch.stack([cos, -sin, t1, sin, cos, t2], dim=1))


class AffineTransform(LinearFamily):
    """A general affine map ``(θ11, θ12, θ13, θ21, θ22, θ23)``: 6 parameters."""

    name = "affine"
    num_params = 6

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0])

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        params = matrix[:2].reshape(6)
        _check_start_matrix(matrix, self.name, self._matrix(params.unsqueeze(0))[0])
        return params.float()

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return _rows_to_matrix(params)


class ProjectiveTransform(LinearFamily):
    """A homography ``(θ11, θ12, θ13, θ21, θ22, θ23, θ31, θ32)`` with ``θ33 = 1``: 8 parameters."""

    name = "projective"
    num_params = 8

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return torch.tensor([scale, 0.0, 0.0, 0.0, scale, 0.0, 0.0, 0.0])

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(matrix).all() or matrix[2, 2].abs() < 1e-12:
            raise ValueError(f"a projective start needs a finite matrix with a non-zero (3, 3) entry, got "
                             f"{matrix.tolist()}")
        return (matrix / matrix[2, 2]).reshape(9)[:8].float()

    def _matrix(self, params: torch.Tensor) -> torch.Tensor:
        return _rows_to_matrix(params[:, :6], params[:, 6:])


class ThinPlateSpline(TransformFamily):
    """A thin-plate spline through a ``grid_size x grid_size`` grid of control points: ``2 K²`` parameters.

    The control points sit in output space at :func:`tps_control_points` (``linspace(-1, 1, K)`` in x and
    y, row-major: y major). The parameters are the input positions ``(x, y)`` where each control point
    lands, flattened ``x0, y0, x1, y1, ...``; the map between them is the thin-plate spline that
    interpolates them (:func:`tps_interpolation_matrix`), affine when the positions are.
    """

    name = "tps"

    def __init__(self, grid_size: int = 4) -> None:
        if int(grid_size) != grid_size or grid_size < 2:
            raise ValueError(f"a thin-plate spline needs grid_size >= 2 (a K x K control grid), got {grid_size}")
        self.grid_size = int(grid_size)
        self.num_params = 2 * self.grid_size ** 2

    def init_params(self, scale: float = 1.0) -> torch.Tensor:
        return (scale * tps_control_points(self.grid_size, torch.float32)).reshape(-1)

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        # the control points moved by the matrix: for an affine matrix the spline is that map exactly
        control = tps_control_points(self.grid_size, matrix.dtype, matrix.device)
        return transform_points(matrix.unsqueeze(0), control)[0].reshape(-1).float()

    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        control = tps_control_points(self.grid_size, torch.float64, points.device)
        weights = tps_interpolation_matrix(control, points.to(torch.float64))
        return _apply_tps(weights.to(params.dtype), params)

    def sampling_grid(self, params: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        self.check_params(params)
        height, width = int(size[0]), int(size[1])
        weights = _tps_pixel_weights_as(self.grid_size, height, width, params.dtype, params.device)
        return _apply_tps(weights, params).reshape(params.shape[0], height, width, 2)

    def __repr__(self) -> str:
        return f"ThinPlateSpline(grid_size={self.grid_size}, num_params={self.num_params})"


TRANSFORMS: dict[str, type[TransformFamily]] = {
    cls.name: cls
    for cls in (IdentityTransform, SimilarityTransform, AffineTransform, ProjectiveTransform, ThinPlateSpline)
}


def get_transform(name: str, **options) -> TransformFamily:
    """The transform family called ``name`` (``identity``, ``similarity``, ``affine``, ``projective``,
    ``tps``); ``options`` go to its constructor (``tps``: ``grid_size``)."""
    try:
        cls = TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}") from None
    unknown = set(options) - set(inspect.signature(cls).parameters)
    if unknown:
        raise ValueError(f"the {name} transform has no option(s) {sorted(unknown)}")
    return cls(**options)


def similarity_matrix(scale: float, rotation: float = 0.0, tx: float = 0.0, ty: float = 0.0,
                      dtype=torch.float32, device=None) -> torch.Tensor:
    """The output-to-input matrix ``(3, 3)`` of one similarity: ``[[s cos r, -s sin r, tx],
    [s sin r, s cos r, ty], [0, 0, 1]]``, the similarity family's ``(λ, α, t1, t2)`` with ``rotation`` in
    radians. The output square ``[-1, 1]²`` is sampled from the input square of half-side ``scale``
    centred at ``(tx, ty)``, turned by ``rotation`` (positive turns from +x towards +y, i.e. clockwise
    on screen)."""
    cos, sin = scale * math.cos(rotation), scale * math.sin(rotation)
    return torch.tensor([[cos, -sin, tx], [sin, cos, ty], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _check_start_matrix(matrix: torch.Tensor, family: str, expressed: torch.Tensor, tol: float = 1e-5) -> None:
    """Refuse a start matrix ``(3, 3)`` the ``family`` turns into another map (``expressed``, ``(3, 3)``)."""
    if matrix.shape != (3, 3):
        raise ValueError(f"a start matrix has shape (3, 3), got {tuple(matrix.shape)}")
    if not torch.allclose(matrix.to(expressed.dtype), expressed, atol=tol, rtol=0):
        raise ValueError(f"the {family} transform cannot start from the matrix {matrix.tolist()}; start it from "
                         f"a map of its own family (e.g. transform=similarity or affine for a turned frame)")


# ------------------------------------------------------------------------------- thin-plate spline
def tps_control_points(grid_size: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``(K², 2)`` output-space control points: ``linspace(-1, 1, K)`` in x and y, row-major (y major),
    each ``(x, y)``."""
    ticks = torch.linspace(-1.0, 1.0, grid_size, dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


def tps_radial_basis(squared_distance: torch.Tensor) -> torch.Tensor:
    """The thin-plate kernel ``U = r² log r²`` of squared distances (any shape), 0 at ``r = 0``."""
    tiny = torch.finfo(squared_distance.dtype).tiny
    return squared_distance * torch.log(squared_distance.clamp_min(tiny))


def _squared_distances(points: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """``(..., M, 2)`` and ``(N, 2)`` -> ``(..., M, N)``, computed exactly (no ``a² - 2ab + b²`` cancellation)."""
    return ((points.unsqueeze(-2) - control) ** 2).sum(-1)


def tps_interpolation_matrix(control: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The linear map from control-point targets to mapped points: ``(N, 2)`` control points and
    ``(M, 2)`` or ``(B, M, 2)`` query points -> ``W`` of shape ``(M, N)`` or ``(B, M, N)``.

    The spline ``f(p) = a0 + a1 x + a2 y + Σ_j w_j U(|p - c_j|²)`` through targets ``t_j = f(c_j)`` with
    ``Σ w_j = Σ w_j c_j = 0`` solves ``[[K, P], [Pᵀ, 0]] [w; a] = [t; 0]`` (``K_ij = U(|c_i - c_j|²)``,
    ``P = [1, c]``). That system depends on the control points only, so ``f(points) = W @ t`` with
    ``W = [U(|p - c|²), 1, p] @ L⁻¹[:, :N]``; ``W`` is the identity at the control points, and its rows
    reproduce every affine map exactly. Compute it in float64: ``L`` is poorly scaled in float32.
    """
    n = control.shape[0]
    ones = control.new_ones(n, 1)
    system = control.new_zeros(n + 3, n + 3)
    system[:n, :n] = tps_radial_basis(_squared_distances(control, control))
    system[:n, n:] = torch.cat([ones, control], dim=1)
    system[n:, :n] = system[:n, n:].T
    rhs = torch.cat([torch.eye(n, dtype=control.dtype, device=control.device), control.new_zeros(3, n)])
    coefficients = torch.linalg.solve(system, rhs)  # (N + 3, N): the spline of each unit target
    kernel = tps_radial_basis(_squared_distances(points, control))
    affine = torch.cat([torch.ones_like(points[..., :1]), points], dim=-1)
    return torch.cat([kernel, affine], dim=-1) @ coefficients


@functools.lru_cache(maxsize=16)
def _tps_pixel_weights(grid_size: int, height: int, width: int) -> torch.Tensor:
    """:func:`tps_interpolation_matrix` at the pixel centres of a ``height x width`` output, ``(H*W, K²)``
    float64 on the CPU. Cached: it depends on the sizes only. The NumPy round trip makes it a constant
    for a tracer even when first computed inside a trace (ONNX has no linear solver)."""
    with torch.no_grad():
        control = tps_control_points(grid_size)
        weights = tps_interpolation_matrix(control, normalized_grid(height, width, torch.float64)[:, :2])
        return torch.from_numpy(weights.numpy().copy())


@functools.lru_cache(maxsize=16)
def _tps_pixel_weights_as(grid_size: int, height: int, width: int, dtype: torch.dtype,
                          device: torch.device) -> torch.Tensor:
    # one copy per dtype and device: no host-to-device transfer in every training step
    return _tps_pixel_weights(grid_size, height, width).to(dtype=dtype, device=device)


def _apply_tps(weights: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Weights ``(M, N)`` or ``(B, M, N)`` and control-point positions ``(B, 2N)`` -> ``(B, M, 2)``."""
    return finite_coordinates(weights @ params.reshape(params.shape[0], -1, 2))


# ------------------------------------------------------------------------------------ linear maps
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


def finite_coordinates(xy: torch.Tensor) -> torch.Tensor:
    """Mapped coordinates with NaNs (only from non-finite parameters) set to 0 and everything clamped to
    ``±COORD_LIMIT``: far outside the image, but finite."""
    return torch.nan_to_num(xy, nan=0.0).clamp(-COORD_LIMIT, COORD_LIMIT)


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply matrices ``(B, 3, 3)`` to normalised points ``(B, N, 2)`` or ``(N, 2)``; returns ``(B, N, 2)``.

    The projective division uses :func:`safe_denominator` and the result :func:`finite_coordinates`, so
    the output is always finite.
    """
    if points.ndim == 2:
        points = points.unsqueeze(0).expand(matrix.shape[0], -1, -1)
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    mapped = homogeneous @ matrix.transpose(1, 2)  # (B, N, 3)
    return finite_coordinates(mapped[..., :2] / safe_denominator(mapped[..., 2:]))


def grid_from_matrix(matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The ``grid_sample`` grid ``(B, H, W, 2)`` of input coordinates of matrices ``(B, 3, 3)`` for an
    output of ``size = (H, W)``."""
    height, width = int(size[0]), int(size[1])
    base = normalized_grid(height, width, dtype=matrix.dtype, device=matrix.device)[:, :2]
    return transform_points(matrix, base).reshape(matrix.shape[0], height, width, 2)


def _sampling_dtype(images: torch.Tensor) -> torch.dtype:
    # Sampling coordinates need float32 at least: low-precision images are sampled in float32.
    return images.dtype if images.dtype == torch.float64 else torch.float32


def sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``images (B, C, H, W)`` at a grid ``(B, h, w, 2)`` of normalised input
    ``(x, y)`` -> ``(B, C, h, w)``; zeros outside the input, ``align_corners=False``, in float32
    (float64 stays float64) even under autocast."""
    if images.ndim != 4:
        raise ValueError(f"sampling expects images of shape (B, C, H, W), got {tuple(images.shape)}")
    if grid.ndim != 4 or grid.shape[0] != images.shape[0] or grid.shape[-1] != 2:
        raise ValueError(f"sampling expects a grid of shape ({images.shape[0]}, h, w, 2), got {tuple(grid.shape)}")
    dtype = _sampling_dtype(images)
    with torch.autocast(device_type=images.device.type, enabled=False):
        return F.grid_sample(images.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=False)


def warp(images: torch.Tensor, matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Sample ``images (B, C, H, W)`` through ``matrix (B, 3, 3)`` into ``(B, C, size[0], size[1])``
    (:func:`sample` at :func:`grid_from_matrix`). With the identity matrix and ``size == (H, W)`` the
    input comes back unchanged."""
    if images.ndim != 4:
        raise ValueError(f"warp expects images of shape (B, C, H, W), got {tuple(images.shape)}")
    if matrix.shape != (images.shape[0], 3, 3):
        raise ValueError(f"warp expects matrices of shape ({images.shape[0]}, 3, 3), got {tuple(matrix.shape)}")
    height, width = int(size[0]), int(size[1])
    if (height, width) == tuple(images.shape[-2:]) and not matrix.requires_grad and bool(
            (matrix == torch.eye(3, dtype=matrix.dtype, device=matrix.device)).all()):
        # Exact identity: float32 pixel-centre coordinates would be off by a few 1e-6 of a pixel.
        return images.clone()
    with torch.autocast(device_type=images.device.type, enabled=False):
        return sample(images, grid_from_matrix(matrix.to(_sampling_dtype(images)), (height, width)))


def square_outline(points_per_side: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """The output square's boundary ``(4 S, 2)``, ``S = points_per_side`` points per side, clockwise from the
    top-left corner (top-left, top-right, bottom-right, bottom-left): a closed polygon when drawn.
    Mapped through a transform it outlines where the output is sampled from (a curve for ``tps``)."""
    steps = torch.linspace(-1.0, 1.0, points_per_side + 1, dtype=dtype, device=device)[:-1]
    plus, minus = torch.ones_like(steps), -torch.ones_like(steps)
    return torch.cat([torch.stack(side, dim=1) for side in (
        (steps, minus), (plus, steps), (-steps, plus), (minus, -steps))])


def grid_lines(lines: int, points_per_line: int = 32, dtype=torch.float32, device=None) -> torch.Tensor:
    """``lines`` horizontal then ``lines`` vertical lines of the output square, ``(2 L, P, 2)`` normalised
    points at ``linspace(-1, 1, L)`` (for ``tps``: the lines through its control points)."""
    across = torch.linspace(-1.0, 1.0, lines, dtype=dtype, device=device)
    along = torch.linspace(-1.0, 1.0, points_per_line, dtype=dtype, device=device)
    fixed, moving = across[:, None].expand(lines, points_per_line), along[None].expand(lines, points_per_line)
    return torch.cat([torch.stack([moving, fixed], -1), torch.stack([fixed, moving], -1)])


def corners(matrix: torch.Tensor) -> torch.Tensor:
    """Where the output image's four corners come from in the input: ``(B, 4, 2)`` normalised points.

    Order: top-left, top-right, bottom-right, bottom-left (a closed quadrilateral when drawn).
    """
    return transform_points(matrix, square_outline(1, matrix.dtype, matrix.device))


def affine_fit(points: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """The least-squares affine matrices ``(B, 3, 3)`` taking ``points`` ``(N, 2)`` to ``mapped`` ``(B, N, 2)``.

    For a transform without a matrix (``tps``), ``affine_fit(grid, family.map_points(params, grid))`` is
    its best affine summary, so :func:`decompose` can read a rotation and scale off it. Exact for an
    affine map; needs ``N >= 3`` points not on one line.
    """
    design = torch.cat([points, torch.ones_like(points[:, :1])], dim=1).to(mapped.dtype)  # (N, 3)
    solution = torch.linalg.lstsq(design.expand(mapped.shape[0], -1, -1), mapped).solution  # (B, 3, 2)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=mapped.dtype, device=mapped.device).expand(mapped.shape[0], 1, 3)
    return torch.cat([solution.transpose(1, 2), bottom], dim=1)


# ------------------------------------------------------------------------------ antialiased resize
@functools.lru_cache(maxsize=32)
def _resize_weights(in_size: int, out_size: int) -> torch.Tensor:
    """``(out, in)`` float64 rows of a triangle filter widened by the shrink factor: PyTorch's bilinear
    ``antialias=True`` (PIL's) filter, pixel centres at ``(i + 0.5) in / out``."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # enlarging: plain bilinear
    centres = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    inputs = torch.arange(in_size, dtype=torch.float64) + 0.5
    weights = (1.0 - (inputs[None] - centres[:, None]).abs() / support).clamp_min(0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def resize_antialiased(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``images (..., H, W)`` to ``(..., size[0], size[1])`` with antialiasing, equal to
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``, as two matrix products:
    ONNX has no antialiased resize in the TorchScript exporter, a matrix product exports everywhere."""
    rows = _resize_weights(images.shape[-2], int(size[0])).to(dtype=images.dtype, device=images.device)
    cols = _resize_weights(images.shape[-1], int(size[1])).to(dtype=images.dtype, device=images.device)
    return rows @ images @ cols.T


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
