"""Geometry against the formulas, OpenCV, SciPy and the paper's analytic gradients."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_face.geometry import (
    TRANSFORMS,
    corners,
    decompose,
    get_transform,
    grid_from_matrix,
    grid_lines,
    normalized_grid,
    resize_antialiased,
    sample,
    square_outline,
    to_pixel_homography,
    tps_control_points,
    tps_interpolation_matrix,
    transform_points,
    warp,
)

FAMILIES = sorted(TRANSFORMS)
LINEAR = [name for name in FAMILIES if get_transform(name).linear]


def _face(lfw_dir, size: int = 96) -> np.ndarray:
    """A real LFW face, float64 RGB in [0, 1], resized to ``size``."""
    image = cv2.imread(str(lfw_dir / "lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"))
    image = cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return image.astype(np.float64) / 255.0


@pytest.mark.parametrize("name", FAMILIES)
def test_family_contract(name):
    family = get_transform(name)
    assert family.num_params == {"identity": 0, "similarity": 4, "affine": 6, "projective": 8, "tps": 32}[name]
    params = family.identity_params()
    assert params.shape == (family.num_params,)
    # every family: identity parameters sample every output pixel at its own centre
    grid = family.sampling_grid(params.unsqueeze(0).repeat(3, 1), (5, 7))
    assert grid.shape == (3, 5, 7, 2)
    torch.testing.assert_close(grid, normalized_grid(5, 7)[:, :2].reshape(1, 5, 7, 2).expand(3, 5, 7, 2))
    if family.linear:
        matrix = family.matrix(params.unsqueeze(0).repeat(3, 1))
        assert matrix.shape == (3, 3, 3)
        torch.testing.assert_close(matrix, torch.eye(3).expand(3, 3, 3), rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in LINEAR if n != "identity"])
def test_linear_sampling_grid_is_the_matrix_grid(name):
    family = get_transform(name)
    torch.manual_seed(0)
    params = family.identity_params() + 0.1 * torch.randn(2, family.num_params)
    grid = family.sampling_grid(params, (6, 9))
    torch.testing.assert_close(grid, grid_from_matrix(family.matrix(params), (6, 9)), rtol=0, atol=0)
    points = torch.rand(2, 5, 2) * 2 - 1
    torch.testing.assert_close(family.map_points(params, points), transform_points(family.matrix(params), points))


def test_unknown_family_lists_choices():
    with pytest.raises(ValueError, match=r"affine.*identity.*projective.*similarity.*tps"):
        get_transform("perspective")
    with pytest.raises(ValueError, match=r"affine transform has no option.*grid_size"):
        get_transform("affine", grid_size=4)
    with pytest.raises(ValueError, match="grid_size >= 2"):
        get_transform("tps", grid_size=1)


def test_wrong_param_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        get_transform("affine").matrix(torch.zeros(2, 8))


def test_identity_warp_is_exact():
    images = torch.rand(2, 3, 37, 53)
    out = warp(images, torch.eye(3).expand(2, 3, 3), (37, 53))
    torch.testing.assert_close(out, images, rtol=0, atol=1e-6)


def test_similarity_moves_known_points():
    lam, alpha, t1, t2 = 0.8, math.radians(30), 0.1, -0.2
    matrix = get_transform("similarity").matrix(torch.tensor([[lam, alpha, t1, t2]], dtype=torch.float64))
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-0.5, 0.25]], dtype=torch.float64)
    mapped = transform_points(matrix, points)[0]
    for (x, y), (u, v) in zip(points.tolist(), mapped.tolist()):
        assert u == pytest.approx(lam * math.cos(alpha) * x - lam * math.sin(alpha) * y + t1, abs=1e-12)
        assert v == pytest.approx(lam * math.sin(alpha) * x + lam * math.cos(alpha) * y + t2, abs=1e-12)
    stats = decompose(matrix)
    assert stats["scale"].item() == pytest.approx(lam)
    assert stats["rotation"].item() == pytest.approx(alpha)
    assert stats["shear"].item() == pytest.approx(0.0, abs=1e-12)


def test_projective_division_and_guard():
    theta = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 0.5, 0.0]], dtype=torch.float64)
    matrix = get_transform("projective").matrix(theta)
    mapped = transform_points(matrix, torch.tensor([[0.5, 0.5]], dtype=torch.float64))[0, 0]
    assert mapped.tolist() == pytest.approx([0.5 / 1.25, 0.5 / 1.25])
    # z = 0 exactly at x = -1 for θ31 = 1: finite output, no NaN/Inf
    degenerate = get_transform("projective").matrix(torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 1.0, 0.0]]))
    out = warp(torch.rand(1, 3, 16, 16), degenerate, (16, 16))
    assert torch.isfinite(out).all()


def test_warp_matches_opencv_warp_perspective(lfw_dir):
    rng = np.random.default_rng(0)
    image = _face(lfw_dir, 80).astype(np.float32)
    height, width, out_h, out_w = 80, 80, 64, 72
    for _ in range(8):
        theta = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float64)
        theta += rng.normal(scale=[0.15, 0.1, 0.1, 0.1, 0.15, 0.1, 0.1, 0.1])
        matrix = get_transform("projective").matrix(torch.tensor(theta).unsqueeze(0))
        ours = warp(torch.from_numpy(image).permute(2, 0, 1)[None].double(), matrix, (out_h, out_w))
        ours = ours[0].permute(1, 2, 0).numpy()
        pixel = to_pixel_homography(matrix, (height, width), (out_h, out_w))[0].numpy()
        reference = cv2.warpPerspective(image, pixel, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # Compare away from the image border, where OpenCV's border handling differs from zero padding.
        inside = transform_points(matrix, normalized_grid(out_h, out_w, torch.float64)[:, :2])[0].numpy()
        margin_x, margin_y = 1 - 2.0 / width, 1 - 2.0 / height
        mask = ((np.abs(inside[:, 0]) < margin_x) & (np.abs(inside[:, 1]) < margin_y)).reshape(out_h, out_w)
        assert mask.mean() > 0.5
        # OpenCV quantises interpolation weights to 1/32: a few 1/255ths at most
        assert np.abs(ours - reference)[mask].max() < 0.02
        assert np.abs(ours - reference)[mask].mean() < 0.003


@pytest.mark.parametrize("name", [n for n in LINEAR if n != "identity"])
def test_gradcheck_every_family(name):
    family = get_transform(name)
    torch.manual_seed(0)
    params = (family.identity_params().double() + 0.05 * torch.randn(family.num_params).double())
    params = params.unsqueeze(0).repeat(2, 1).requires_grad_(True)
    images = torch.rand(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)

    def fn(p, x):
        return warp(x, family.matrix(p), (5, 6))

    assert torch.autograd.gradcheck(fn, (params, images), eps=1e-6, atol=1e-5)


def test_identity_family_gradcheck_on_images():
    images = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    matrix = get_transform("identity").matrix(torch.zeros(1, 0, dtype=torch.float64)) * torch.tensor(
        [0.9, 0.9, 1.0], dtype=torch.float64).diag()
    assert torch.autograd.gradcheck(lambda x: warp(x, matrix, (4, 5)), (images,))


def _bilinear_partials(image: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """The paper's sampling kernel V = Σ U_nm max(0, 1-|x_s-m|) max(0, 1-|y_s-n|) and its partial
    derivatives dV/dx_s, dV/dy_s (pixel coordinates, zero outside), for every output point."""
    height, width, channels = image.shape
    value = np.zeros(xs.shape + (channels,))
    d_x = np.zeros_like(value)
    d_y = np.zeros_like(value)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    for dm in (0, 1):
        for dn in (0, 1):
            m, n = x0 + dm, y0 + dn
            inside = (m >= 0) & (m < width) & (n >= 0) & (n < height)
            u = np.zeros(xs.shape + (channels,))
            u[inside] = image[n[inside], m[inside]]
            wx, wy = np.maximum(0, 1 - np.abs(xs - m)), np.maximum(0, 1 - np.abs(ys - n))
            sx = np.where(m >= xs, 1.0, -1.0) * (np.abs(m - xs) < 1)  # the paper's piecewise dV/dx_s
            sy = np.where(n >= ys, 1.0, -1.0) * (np.abs(n - ys) < 1)
            value += u * (wx * wy)[..., None]
            d_x += u * (sx * wy)[..., None]
            d_y += u * (wx * sy)[..., None]
    return value, d_x, d_y


def _paper_gradient(lfw_dir, name, params, which, weights_seed=1):
    """Parameters must be generic (no sample landing exactly on a pixel centre, where the kernel has
    a kink and one-sided derivatives differ).

    Analytic dL/dθ for L = Σ w · V, following the paper's equations (3) for projective θ31 and
    (7) for similarity α, against autograd through :func:`warp`."""
    image = _face(lfw_dir, 64)
    height, width = image.shape[:2]
    out_h, out_w = 48, 48
    family = get_transform(name)
    theta = torch.tensor([params], dtype=torch.float64, requires_grad=True)
    matrix = family.matrix(theta)
    rng = np.random.default_rng(weights_seed)
    weights = rng.normal(size=(out_h, out_w, 3))
    out = warp(torch.from_numpy(image).permute(2, 0, 1)[None], matrix, (out_h, out_w))[0].permute(1, 2, 0)
    (out * torch.from_numpy(weights)).sum().backward()
    autograd = theta.grad[0, which].item()

    grid = normalized_grid(out_h, out_w, torch.float64).numpy()
    xt, yt = grid[:, 0], grid[:, 1]
    m = matrix.detach()[0].numpy()
    z = m[2, 0] * xt + m[2, 1] * yt + 1
    xs_n = (m[0, 0] * xt + m[0, 1] * yt + m[0, 2]) / z
    ys_n = (m[1, 0] * xt + m[1, 1] * yt + m[1, 2]) / z
    xs, ys = ((xs_n + 1) * width - 1) / 2, ((ys_n + 1) * height - 1) / 2
    _, d_x, d_y = _bilinear_partials(image, xs.reshape(out_h, out_w), ys.reshape(out_h, out_w))
    if name == "projective":  # eq. (3): dx_s/dθ31 = -x_t x_s / z, dy_s/dθ31 = -x_t y_s / z
        dxs, dys = -xt * xs_n / z, -xt * ys_n / z
    else:  # eq. (7): dx_s/dα = -λ sinα x_t - λ cosα y_t, dy_s/dα = λ cosα x_t - λ sinα y_t
        lam, alpha = params[0], params[1]
        dxs = -lam * math.sin(alpha) * xt - lam * math.cos(alpha) * yt
        dys = lam * math.cos(alpha) * xt - lam * math.sin(alpha) * yt
    # chain rule through the normalised -> pixel conversion (du/dx = W/2)
    dxs, dys = dxs.reshape(out_h, out_w) * width / 2, dys.reshape(out_h, out_w) * height / 2
    analytic = float(np.sum(weights * (d_x * dxs[..., None] + d_y * dys[..., None])))
    return analytic, autograd


def test_paper_gradient_projective_theta31(lfw_dir):
    analytic, autograd = _paper_gradient(lfw_dir, "projective", [0.9137, 0.0513, 0.0231, -0.0417, 0.8529, 0.0119, 0.1313, -0.0711], 6)
    assert abs(autograd) > 1.0
    assert analytic == pytest.approx(autograd, rel=1e-9)


def test_paper_gradient_similarity_alpha(lfw_dir):
    analytic, autograd = _paper_gradient(lfw_dir, "similarity", [0.9137, 0.3071, 0.0531, -0.0317], 1)
    assert abs(autograd) > 1.0
    assert analytic == pytest.approx(autograd, rel=1e-9)


def test_corners_of_identity_and_zoom():
    zoom = get_transform("affine").matrix(get_transform("affine").init_params(0.5).unsqueeze(0))
    quad = corners(zoom)[0]
    torch.testing.assert_close(quad, torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]))


def test_warp_shape_and_bf16_autocast():
    images = torch.rand(4, 3, 128, 128)
    matrix = get_transform("projective").matrix(get_transform("projective").init_params(0.875).expand(4, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(images, matrix, (112, 112))
    assert out.shape == (4, 3, 112, 112)
    # centre 112 of 128: the zoom picks exactly the central pixels
    torch.testing.assert_close(out.float(), images[:, :, 8:120, 8:120], atol=1e-5, rtol=0)


def test_outline_and_grid_lines():
    outline = square_outline(2)
    # clockwise from the top-left corner, two points per side: corners and edge midpoints
    torch.testing.assert_close(outline, torch.tensor([[-1.0, -1], [0, -1], [1, -1], [1, 0], [1, 1], [0, 1],
                                                      [-1, 1], [-1, 0]]))
    lines = grid_lines(3, 5)
    assert lines.shape == (6, 5, 2)
    torch.testing.assert_close(lines[1, :, 1], torch.zeros(5))  # the middle horizontal line, y = 0
    torch.testing.assert_close(lines[5, :, 0], torch.ones(5))  # the right vertical line, x = 1


# ------------------------------------------------------------------------------- thin-plate spline
def test_tps_interface():
    family = get_transform("tps")
    assert (family.grid_size, family.num_params) == (4, 32) and not family.linear
    control = tps_control_points(4)
    # row-major, y major: x varies fastest; parameters flatten (x0, y0, x1, y1, ...)
    third = 1 / 3
    expected = [[-1, -1], [-third, -1], [third, -1], [1, -1], [-1, -third]]
    torch.testing.assert_close(control[:5], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(family.identity_params(), control.float().reshape(-1))
    assert get_transform("tps", grid_size=3).num_params == 18


def test_tps_interpolates_control_points_exactly():
    family = get_transform("tps", grid_size=4)
    torch.manual_seed(0)
    params = family.identity_params().double() + 0.2 * torch.randn(3, 32, dtype=torch.float64)
    mapped = family.map_points(params, tps_control_points(4))
    torch.testing.assert_close(mapped, params.reshape(3, 16, 2), rtol=0, atol=1e-12)


def test_tps_matches_scipy_thin_plate_rbf():
    from scipy.interpolate import RBFInterpolator

    rng = np.random.default_rng(0)
    control = tps_control_points(5).numpy()
    targets = 0.8 * control + rng.normal(scale=0.1, size=control.shape)
    queries = rng.uniform(-1.2, 1.2, size=(200, 2))
    ours = tps_interpolation_matrix(torch.from_numpy(control), torch.from_numpy(queries)) @ torch.from_numpy(targets)
    reference = RBFInterpolator(control, targets, kernel="thin_plate_spline")(queries)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid_size", [2, 4, 6])
def test_tps_of_affine_offsets_is_that_affine_map(grid_size):
    family = get_transform("tps", grid_size=grid_size)
    affine = torch.tensor([[0.9, -0.2, 0.1], [0.15, 0.8, -0.05], [0.0, 0.0, 1.0]], dtype=torch.float64)[None]
    params = transform_points(affine, tps_control_points(grid_size)).reshape(1, -1)
    points = torch.rand(100, 2, dtype=torch.float64) * 3 - 1.5  # inside and outside the control grid
    torch.testing.assert_close(family.map_points(params, points), transform_points(affine, points),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(family.sampling_grid(params, (7, 5)), grid_from_matrix(affine, (7, 5)),
                               rtol=0, atol=1e-12)


def test_tps_start_view_is_the_centre_crop():
    family = get_transform("tps")
    images = torch.rand(2, 3, 128, 128)
    grid = family.sampling_grid(family.init_params(112 / 128).expand(2, 32), (112, 112))
    # float32 sums of 16 weighted control points: coordinates within 2e-5 of a pixel
    torch.testing.assert_close(sample(images, grid), images[:, :, 8:120, 8:120], atol=5e-5, rtol=0)


def test_tps_gradcheck():
    family = get_transform("tps", grid_size=3)
    torch.manual_seed(0)
    params = (family.identity_params().double() + 0.05 * torch.randn(2, 18, dtype=torch.float64))
    params.requires_grad_(True)
    images = torch.rand(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)

    def fn(p, x):
        return sample(x, family.sampling_grid(p, (5, 6)))

    assert torch.autograd.gradcheck(fn, (params, images), eps=1e-6, atol=1e-5)


extreme = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tps_extreme_offsets_never_give_nan_or_inf(data):
    family = get_transform("tps", grid_size=data.draw(st.sampled_from([2, 4])))
    offsets = torch.tensor([data.draw(st.lists(extreme, min_size=family.num_params, max_size=family.num_params))])
    params = (family.identity_params() + offsets).requires_grad_(True)
    images = torch.rand(1, 3, 16, 16)
    grid = family.sampling_grid(params, (12, 12))
    out = sample(images, grid)
    out.sum().backward()
    assert torch.isfinite(grid).all() and torch.isfinite(out).all() and torch.isfinite(params.grad).all()
    assert out.abs().max() <= images.abs().max() + 1e-5  # bilinear sampling never amplifies
    outline = family.map_points(params.detach(), square_outline(8))
    assert torch.isfinite(outline).all()


# ------------------------------------------------------------------------------ antialiased resize
@pytest.mark.parametrize("size_in,size_out", [(128, 64), (144, 64), (150, 97), (50, 64)])
def test_resize_antialiased_is_torch_antialias(size_in, size_out):
    images = torch.rand(2, 3, size_in, size_in + 3, dtype=torch.float64)
    expected = F.interpolate(images, size=(size_out, size_out), mode="bilinear", align_corners=False,
                             antialias=True)
    torch.testing.assert_close(resize_antialiased(images, (size_out, size_out)), expected, atol=1e-14, rtol=0)


def test_resize_antialiased_filters_a_144_crop(lfw_dir):
    """A real face with a fine stripe pattern: the plain bilinear 144 -> 64 resize aliases it into the
    picture (it reads 2 of every 2.25 pixels), the antialiased one averages it away."""
    face = torch.from_numpy(_face(lfw_dir, 144)).permute(2, 0, 1)[None].float()
    stripes = face.clone()
    stripes[..., ::2] += 0.25  # a 2-pixel period: above the 64-pixel output's Nyquist rate
    def leak(resize):  # how much of the stripes reaches the small picture
        return float((resize(stripes) - resize(face)).std())
    aliased = leak(lambda x: F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
    filtered = leak(lambda x: resize_antialiased(x, (64, 64)))
    assert aliased > 0.05 and filtered < 0.2 * aliased


# ----------------------------------------------------------------- numerical safety of the warp
LINEAR_FAMILIES = ["similarity", "affine", "projective"]




@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(LINEAR_FAMILIES), data=st.data())
def test_extreme_parameters_never_give_nan_or_inf(name, data):
    family = get_transform(name)
    params = torch.tensor([data.draw(st.lists(extreme, min_size=family.num_params, max_size=family.num_params))])
    matrix = family.matrix(params)
    images = torch.rand(1, 3, 16, 16)
    out = warp(images, matrix, (12, 12))
    assert torch.isfinite(out).all()
    assert out.abs().max() <= images.abs().max() + 1e-5  # bilinear sampling never amplifies
    stats = decompose(matrix.double())
    assert all(torch.isfinite(v).all() or k in ("scale", "scale_x") for k, v in stats.items())


@settings(max_examples=40, deadline=None)
@given(theta31=st.floats(-50, 50), theta32=st.floats(-50, 50))
def test_projective_denominator_guard(theta31, theta32):
    """Any perspective terms, including ones that put z = 0 inside the image, give finite gradients."""
    params = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, theta31, theta32]], requires_grad=True)
    out = warp(torch.rand(1, 1, 9, 9), get_transform("projective").matrix(params), (9, 9))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(params.grad).all()


def test_affine_fit_is_exact_for_an_affine_map_and_summarises_a_tps() -> None:
    from stn_face.geometry import affine_fit, decompose, get_transform, normalized_grid

    grid = normalized_grid(7, 7, dtype=torch.float64)[..., :2].reshape(-1, 2)
    angle, scale = math.radians(20.0), 0.8
    matrix = torch.tensor([[[scale * math.cos(angle), -scale * math.sin(angle), 0.1],
                            [scale * math.sin(angle), scale * math.cos(angle), -0.05], [0.0, 0.0, 1.0]]],
                          dtype=torch.float64)
    mapped = grid @ matrix[0, :2, :2].T + matrix[0, :2, 2]
    torch.testing.assert_close(affine_fit(grid, mapped[None]), matrix)
    # a thin-plate spline whose control points are all moved by that rotation: the fit recovers it
    tps = get_transform("tps", grid_size=4)
    control = tps.identity_params().double().reshape(1, -1, 2)
    params = (control @ matrix[0, :2, :2].T + matrix[0, :2, 2]).reshape(1, -1)
    stats = decompose(affine_fit(grid, tps.map_points(params, grid)))
    assert math.degrees(stats["rotation"].item()) == pytest.approx(20.0, abs=1e-6)
    assert stats["scale"].item() == pytest.approx(0.8, abs=1e-6)
