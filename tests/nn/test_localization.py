"""The localization net: the paper's Table 2 settings, identity start, antialiased input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.geometry import get_transform
from stn_face.nn import LocalizationNet

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


def test_localization_input_is_antialiased():
    """A 144 crop reaches the 64x64 localization input filtered as PyTorch's antialiased bilinear resize."""
    net = LocalizationNet(6, conv_channels=(8,)).eval()
    torch.nn.init.normal_(net.head.weight)
    images = torch.rand(2, 3, 144, 144)
    small = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(net(images), net(small), atol=1e-5, rtol=1e-5)
