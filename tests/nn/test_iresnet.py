"""The IResNet family (backbone=iresnet18/34/50/100) with arcface_torch's weights.

The reference is written here from arcface_torch's ``backbones/iresnet.py`` as plain functional code
over the state dict (its keys, its order of operations), so the project's IResNet is compared with an
independent forward, not with itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.nn.pretrained import load_pretrained

DEPTHS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
          "iresnet100": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)
EPS = 1e-5


def _bn(state, prefix, channels, generator):
    state[f"{prefix}.weight"] = 1 + 0.2 * torch.randn(channels, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(channels, generator=generator)
    state[f"{prefix}.running_mean"] = 0.1 * torch.randn(channels, generator=generator)
    state[f"{prefix}.running_var"] = 0.5 + torch.rand(channels, generator=generator)
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def _conv(state, key, out_channels, in_channels, size, generator):
    fan_in = in_channels * size * size
    state[key] = torch.randn(out_channels, in_channels, size, size, generator=generator) * (0.5 / fan_in) ** 0.5


def arcface_state_dict(layers, seed: int = 0, embedding: int = 512) -> dict[str, torch.Tensor]:
    """Random weights under arcface_torch's IResNet keys (conv1, bn1, prelu, layerN.i.*, bn2, fc, features)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "conv1.weight", 64, 3, 3, g)
    _bn(state, "bn1", 64, g)
    state["prelu.weight"] = 0.25 + 0.05 * torch.randn(64, generator=g)
    inplanes = 64
    for stage, (count, planes) in enumerate(zip(layers, WIDTHS), start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            _bn(state, f"{p}.bn1", inplanes, g)
            _conv(state, f"{p}.conv1.weight", planes, inplanes, 3, g)
            _bn(state, f"{p}.bn2", planes, g)
            state[f"{p}.prelu.weight"] = 0.25 + 0.05 * torch.randn(planes, generator=g)
            _conv(state, f"{p}.conv2.weight", planes, planes, 3, g)
            _bn(state, f"{p}.bn3", planes, g)
            if i == 0:  # stride 2 in every first block: arcface_torch gives it a downsample branch
                _conv(state, f"{p}.downsample.0.weight", planes, inplanes, 1, g)
                _bn(state, f"{p}.downsample.1", planes, g)
            inplanes = planes
    _bn(state, "bn2", 512, g)
    state["fc.weight"] = torch.randn(embedding, 512 * 7 * 7, generator=g) * (1 / (512 * 49)) ** 0.5
    state["fc.bias"] = 0.01 * torch.randn(embedding, generator=g)
    _bn(state, "features", embedding, g)
    state["features.weight"] = torch.ones(embedding)  # frozen at 1 in arcface_torch
    return state


def reference_forward(state, layers, x: torch.Tensor) -> torch.Tensor:
    """arcface_torch's IResNet.forward (eval mode) over the state dict, in torch.nn.functional."""
    def bn(t, p):
        return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], training=False, eps=EPS)

    x = F.conv2d(x, state["conv1.weight"], stride=1, padding=1)
    x = F.prelu(bn(x, "bn1"), state["prelu.weight"])
    for stage, count in enumerate(layers, start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            stride = 2 if i == 0 else 1
            out = F.conv2d(bn(x, f"{p}.bn1"), state[f"{p}.conv1.weight"], stride=1, padding=1)
            out = F.prelu(bn(out, f"{p}.bn2"), state[f"{p}.prelu.weight"])
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn3")
            identity = x
            if f"{p}.downsample.0.weight" in state:
                identity = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = out + identity
    x = torch.flatten(bn(x, "bn2"), 1)
    x = F.linear(x, state["fc.weight"], state["fc.bias"])
    return bn(x, "features")


def _build(option: str, weights: str | None):
    overrides = [f"backbone={option}"] + ([f"backbone.weights={weights}"] if weights else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return instantiate(cfg.backbone)


@pytest.mark.parametrize("option", sorted(DEPTHS, key=lambda o: sum(DEPTHS[o])))
def test_arcface_weights_reproduce_the_reference(option, tmp_path, one_thread):
    layers = DEPTHS[option]
    state = arcface_state_dict(layers, seed=len(option))
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    net = load_pretrained(_build(option, str(path))).eval()
    assert net.head.bn1d.weight.requires_grad is False  # arcface_torch's features.weight: fixed at 1
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    with torch.no_grad():
        got = net(x)
        expected = reference_forward(state, layers, x)
    assert got.shape == (2, 512)
    scale = expected.abs().max()
    assert scale > 0.1  # the random weights give a signal, not zeros
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(scale))


def test_dataparallel_prefix_and_missing_counters_are_accepted(tmp_path):
    layers = DEPTHS["iresnet18"]
    state = arcface_state_dict(layers)
    saved = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(saved, tmp_path / "r18.pth")
    net = load_pretrained(_build("iresnet18", str(tmp_path / "r18.pth"))).eval()
    torch.testing.assert_close(net.head.fc.weight, state["fc.weight"])
    torch.testing.assert_close(net.head.bn1d.bias, state["features.bias"])


def test_without_weights_the_embedding_bn_is_unchanged():
    net = _build("iresnet18", None)
    assert net.weights is None and net.head.bn1d.weight is None  # non-affine, as before


def test_face_embedder_from_arcface_weights_alone(tmp_path, one_thread):
    """FaceEmbedder.from_pretrained (stn-face-embed backbone=iresnet18 backbone.weights=PATH): no
    transformer, the crop resized to 112 and normalised as the data pipeline does, then arcface_torch's
    network."""
    import numpy as np

    from stn_face.data.augment import eval_transform
    from stn_face.embedder import FaceEmbedder

    layers = DEPTHS["iresnet18"]
    state = arcface_state_dict(layers, seed=3)
    torch.save(state, tmp_path / "backbone.pth")
    config = {"_target_": "stn_face.nn.IResNet", "layers": list(layers), "weights": str(tmp_path / "backbone.pth")}
    embedder = FaceEmbedder.from_pretrained(config)
    assert embedder.image_size == 112 and embedder.embedding_size == 512 and embedder.checkpoint_path is None
    image = np.random.default_rng(0).integers(0, 256, (130, 130, 3), dtype=np.uint8)
    got = embedder.embed(image, flip=False)
    x = eval_transform(112)(image=image)["image"][None]
    expected = F.normalize(reference_forward(state, layers, x))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
