"""The spatial transformer: every family's start view, its options and errors, learning a warp."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from stn_face.geometry import get_transform, square_outline
from stn_face.nn import LocalizationNet, SpatialTransformer
from stn_face.nn.transformer import start_scale


def _small_localization(**kw):
    return LocalizationNet(conv_channels=(8, 16), **kw)


@pytest.mark.parametrize("size", [128, 144])
@pytest.mark.parametrize("name", ["identity", "similarity", "affine", "projective", "tps"])
def test_every_family_starts_at_the_same_centre_crop(name, size):
    """The start view follows from the sizes: the centre 112 pixels of a 128 or a 144 crop, for the
    identity row and every learned family alike."""
    stn = SpatialTransformer(name, _small_localization, output_size=(112, 112), input_size=size).eval()
    assert stn.init_scale == pytest.approx(112 / size)
    images = torch.rand(2, 3, size, size)
    aligned, transform = stn(images)
    border = (size - 112) // 2
    # tps: float32 sums of 16 weighted control points, within 2e-5 of a pixel
    torch.testing.assert_close(aligned, images[:, :, border:border + 112, border:border + 112], atol=5e-5, rtol=0)
    assert transform.shape == ((2, 3, 3) if stn.has_matrix else (2, 32))
    outline = stn.map_points(transform, square_outline(1))
    torch.testing.assert_close(outline, torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]]).expand(2, 4, 2) * 112 / size)
    if stn.localization is not None:  # gradients reach the localization net from the very first step
        stn.train()
        stn(images)[0].mean().backward()
        assert stn.localization.head.weight.grad.abs().sum() > 0


def test_start_view_overrides_and_errors():
    assert SpatialTransformer("affine", _small_localization, input_size=144, init_scale=1.0).init_scale == 1.0
    assert SpatialTransformer("affine", _small_localization).init_scale == 1.0  # no input size: the whole input
    assert start_scale((112, 112), (128, 128)) == 0.875
    with pytest.raises(ValueError, match=r"aspect ratios.*init_scale"):
        SpatialTransformer("affine", _small_localization, input_size=(128, 160))
    with pytest.raises(ValueError, match=r"no option.*grid_size"):
        SpatialTransformer("affine", _small_localization, grid_size=4)
    with pytest.raises(ValueError, match="has no matrix"):
        SpatialTransformer("tps", _small_localization).predict_matrix(torch.rand(1, 3, 64, 64))


def test_transform_config_stored_before_input_size_rebuilds():
    """Checkpoints written before the start view followed the sizes store ``init_scale: 0.875`` and no
    ``input_size``: they rebuild to the same network."""

    stored = {"_target_": "stn_face.nn.SpatialTransformer", "transform": "affine", "output_size": [112, 112],
              "init_scale": 0.875, "localization": {"_target_": "stn_face.nn.LocalizationNet", "_partial_": True,
                                                    "conv_channels": [8], "fc_dims": [], "input_size": 64}}
    stn = instantiate(stored)
    assert stn.init_scale == 0.875 and stn.input_size is None
    torch.testing.assert_close(stn.localization.head.bias, get_transform("affine").init_params(0.875))


def test_tps_transformer_learns_a_warp():
    stn = SpatialTransformer("tps", _small_localization, input_size=128, grid_size=3)
    assert stn.family.num_params == 18 and stn.localization.head.out_features == 18
    images = torch.rand(4, 3, 128, 128)
    optimizer = torch.optim.SGD(stn.parameters(), lr=0.1)
    start = stn.eval()(images)[1].detach()
    stn.train()
    for _ in range(3):  # pull the output towards a shifted copy: the control points move
        optimizer.zero_grad()
        loss = (stn(images)[0] - images[:, :, 4:116, 12:124]).pow(2).mean()
        loss.backward()
        optimizer.step()
    moved = stn.eval()(images)[1].detach()
    assert torch.isfinite(moved).all() and (moved - start).abs().max() > 1e-4


def test_identity_transformer_has_no_parameters():
    stn = SpatialTransformer("identity", None, input_size=128)
    assert sum(p.numel() for p in stn.parameters()) == 0
    images = torch.rand(1, 3, 128, 128)
    torch.testing.assert_close(stn(images)[0], images[:, :, 8:120, 8:120], atol=1e-5, rtol=0)
    same = SpatialTransformer("identity", None, input_size=112)  # scale 1: an exact copy
    small = torch.rand(1, 3, 112, 112)
    assert torch.equal(same(small)[0], small)
