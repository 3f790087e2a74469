"""Localization net, spatial transformer, backbones and margin heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.geometry import get_transform, square_outline
from stn_face.nn import CombinedMarginHead, IResNet, LocalizationNet, PaperResNet, SpatialTransformer
from stn_face.nn.transformer import start_scale

TABLE2 = {"conv1_fc1": (1, 1), "conv2_fc1": (2, 1), "conv3_fc1": (3, 1), "conv2_fc2": (2, 2), "conv3_fc2": (3, 2)}


@pytest.mark.parametrize("setting", sorted(TABLE2))
def test_localization_settings_of_table2(setting):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"localization={setting}"])
    family = get_transform("projective")
    net = instantiate(cfg.localization)(num_params=8, init_params=family.init_params(0.875))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    fcs = sum(isinstance(m, torch.nn.Linear) for m in net.modules())
    assert (convs, fcs) == TABLE2[setting]
    # identity initialisation: zero weights, bias = the family's start parameters, whatever the input
    out = net.eval()(torch.randn(3, 3, 128, 128))
    torch.testing.assert_close(out, family.init_params(0.875).expand(3, 8))
    assert net.head.weight.abs().sum() == 0


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
    from hydra.utils import instantiate

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


def test_localization_input_is_antialiased():
    """A 144 crop reaches the 64x64 localization input filtered as PyTorch's antialiased bilinear resize."""
    net = LocalizationNet(6, conv_channels=(8,)).eval()
    torch.nn.init.normal_(net.head.weight)
    images = torch.rand(2, 3, 144, 144)
    small = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(net(images), net(small), atol=1e-5, rtol=1e-5)


def _macs(model, size=112):
    """Multiply-accumulates of convolutions and linear layers for one face."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * module.in_channels // module.groups * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total


def test_paper_resnet_matches_table1():
    model = PaperResNet()
    assert model(torch.zeros(2, 3, 112, 112).normal_()).shape == (2, 512)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert len(convs) == 4 + 2 * (2 + 4 + 8 + 2)  # 4 stride-2 convs + two per residual unit
    assert 3.7e9 < _macs(model) < 4.1e9  # the paper backbone is about 3.9 GMACs per 112x112 face
    assert not model.head.bn1d.affine


def test_iresnet50_shape_and_cost():
    model = IResNet()
    assert model.eval()(torch.zeros(1, 3, 112, 112)).shape == (1, 512)
    assert 6.0e9 < _macs(model) < 6.6e9  # IResNet-50: about 6.3 GMACs
    assert 40e6 < sum(p.numel() for p in model.parameters()) < 46e6


def test_small_backbone_size():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone=small"])
    model = instantiate(cfg.backbone)
    params = sum(p.numel() for p in model.parameters())
    assert 2e6 < params < 2.5e6, params


def test_arcface_target_logit():
    head = CombinedMarginHead(4, 3, s=10.0, m2=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    embeddings = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits = head(embeddings, torch.tensor([0]))
    theta = math.acos(1 / math.sqrt(2))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(theta + 0.5), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(10 * math.cos(theta), abs=1e-5)
    assert logits[0, 2].item() == pytest.approx(0.0, abs=1e-6)
    # margin off during warm-up: plain normalised softmax
    assert head(embeddings, torch.tensor([0]), margin_factor=0.0)[0, 0].item() == pytest.approx(
        10 * math.cos(theta), abs=1e-5)


def _sphereface_psi(x: float) -> float:
    """SphereFace's ψ at ``x = m θ``: (-1)^k cos x - 2k, k = ⌊x / π⌋ (past π it keeps decreasing)."""
    k = math.floor(x / math.pi)
    return (-1) ** k * math.cos(x) - 2 * k


def _arcface_target(c: float, t: float) -> float:
    """cos(θ + 0.5), and insightface's easy_margin=False branch cos θ - 0.5 sin 0.5 past θ + 0.5 = π."""
    return math.cos(t + 0.5) if t + 0.5 <= math.pi else c - 0.5 * math.sin(0.5)


@pytest.mark.parametrize("config,expected", [
    ("cosface", lambda c, t: c - 0.35), ("sphereface", lambda c, t: _sphereface_psi(1.35 * t)),
    ("arcface", _arcface_target),
])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_head_configs(config, expected, seed):
    # random embeddings reach angles past π / m (sphereface) now and then: each branch is checked
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"head={config}"])
    torch.manual_seed(seed)
    head = instantiate(cfg.head)(embedding_size=8, num_classes=5)
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    logits = head(embeddings, labels)
    cos = F.linear(F.normalize(embeddings), F.normalize(head.weight))
    for row in range(6):
        c = cos[row, labels[row]].item()
        assert logits[row, labels[row]].item() == pytest.approx(64 * expected(c, math.acos(c)), abs=1e-3)


def test_softmax_head_is_a_linear_classifier():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["head=softmax"])
    head = instantiate(cfg.head)(embedding_size=8, num_classes=5)
    x = torch.randn(4, 8)
    torch.testing.assert_close(head(x, torch.zeros(4, dtype=torch.long)), F.linear(x, head.weight, head.bias))


def _target_logits(head: CombinedMarginHead, thetas: torch.Tensor) -> torch.Tensor:
    """The target-class logit over s for embeddings at angles ``thetas`` from their class centre."""
    with torch.no_grad():
        head.weight.copy_(torch.eye(2, 4))
    embeddings = torch.stack([torch.cos(thetas), torch.sin(thetas), torch.zeros_like(thetas),
                              torch.zeros_like(thetas)], dim=1)
    return head(embeddings, torch.zeros(len(thetas), dtype=torch.long))[:, 0].double() / head.s


THETAS = torch.linspace(1e-3, math.pi - 1e-3, 20001)


@pytest.mark.parametrize("m1,m2", [(1.35, 0.0), (1.35, 0.2), (2.0, 0.0), (4.0, 0.0)])
def test_multiplicative_margin_is_continuous_and_decreasing(m1, m2):
    target = _target_logits(CombinedMarginHead(4, 2, s=64.0, m1=m1, m2=m2), THETAS)
    steps = target[1:] - target[:-1]
    assert (steps < 1e-5).all()  # decreasing over θ in [0, π]
    # continuous: steps of 1.6e-4 rad move it by at most m1 * 1.6e-4 (plus float32 acos noise near π);
    # the old fallback jumped by 0.5 at m1 θ = π
    assert steps.abs().max() < 1e-3
    margin_theta = m1 * THETAS.double() + m2
    inside = margin_theta <= math.pi
    torch.testing.assert_close(target[inside], torch.cos(margin_theta[inside]), atol=2e-5, rtol=0)  # float32 acos
    if m1 == 4.0:  # SphereFace's own ψ(θ) = (-1)^k cos(4θ) - 2k on its integer margin
        k = torch.floor(4 * THETAS.double() / math.pi)
        torch.testing.assert_close(target, (-1) ** k * torch.cos(4 * THETAS.double()) - 2 * k, atol=2e-5, rtol=0)


def test_arcface_is_insightface_easy_margin_false():
    m = 0.5
    target = _target_logits(CombinedMarginHead(4, 2, s=64.0, m2=m), THETAS)
    cos = torch.cos(THETAS.double())
    # insightface ArcFace (easy_margin=False): phi = where(cos > cos(π - m), cos(θ + m), cos - sin(π - m) m)
    expected = torch.where(cos > math.cos(math.pi - m), torch.cos(THETAS.double() + m), cos - math.sin(math.pi - m) * m)
    torch.testing.assert_close(target, expected, atol=2e-5, rtol=0)
    steps = target[1:] - target[:-1]
    assert (steps < 1e-5).all()  # decreasing, with insightface's step down at θ = π - m:
    assert float(steps.min()) == pytest.approx(-(math.cos(m) - 1 + m * math.sin(m)), abs=1e-3)  # 0.117
