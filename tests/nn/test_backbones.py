"""Backbones: the paper ResNet (Table 1), IResNet-50 and the small one, shapes and cost."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.nn import IResNet, PaperResNet


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
