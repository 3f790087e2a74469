"""Localization net, spatial transformer, backbones and margin heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.geometry import get_transform
from stn_face.nn import CombinedMarginHead, IResNet, LocalizationNet, PaperResNet, SpatialTransformer

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


@pytest.mark.parametrize("name", ["similarity", "affine", "projective"])
def test_spatial_transformer_starts_at_centre_crop(name):
    stn = SpatialTransformer(name, lambda **kw: LocalizationNet(conv_channels=(8, 16), **kw), init_scale=0.875).eval()
    images = torch.rand(2, 3, 128, 128)
    aligned, matrix = stn(images)
    assert aligned.shape == (2, 3, 112, 112) and matrix.shape == (2, 3, 3)
    torch.testing.assert_close(aligned, images[:, :, 8:120, 8:120], atol=1e-5, rtol=0)
    # gradients reach the localization net from the very first step
    stn.train()
    aligned, _ = stn(images)
    aligned.mean().backward()
    assert stn.localization.head.weight.grad.abs().sum() > 0


def test_identity_transformer_has_no_parameters():
    stn = SpatialTransformer("identity", None, init_scale=0.875)
    assert sum(p.numel() for p in stn.parameters()) == 0
    images = torch.rand(1, 3, 128, 128)
    torch.testing.assert_close(stn(images)[0], images[:, :, 8:120, 8:120], atol=1e-5, rtol=0)


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


@pytest.mark.parametrize("config,expected", [
    ("cosface", lambda c, t: c - 0.35), ("sphereface", lambda c, t: math.cos(1.35 * t)), ("arcface", lambda c, t: math.cos(t + 0.5)),
])
def test_head_configs(config, expected):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"head={config}"])
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
