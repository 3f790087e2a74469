"""Margin heads: ArcFace/CosFace/SphereFace targets, their configs and insightface's conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.nn import CombinedMarginHead


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
