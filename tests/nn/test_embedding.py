"""The embedding network and the flip-sum feature (the torch twin of verification.flip_sum_features)."""

from __future__ import annotations

import numpy as np
import torch

from stn_face.evaluation.verification import flip_sum_features
from stn_face.nn.embedding import EmbeddingNet, flip_sum
from stn_face.nn.transformer import SpatialTransformer


def test_flip_sum_equals_the_numpy_feature_and_ignores_a_mirror() -> None:
    torch.manual_seed(0)
    weights = torch.randn(3 * 8 * 8, 5)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ weights

    images = torch.rand(4, 3, 8, 8)
    feature = flip_sum(embed, images)
    expected = flip_sum_features(embed(images).numpy(), embed(images.flip(-1)).numpy())
    assert np.allclose(feature.numpy(), expected, atol=1e-6)
    assert torch.allclose(feature.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(flip_sum(embed, images.flip(-1)), feature, atol=1e-6, rtol=0)  # mirror-invariant


def test_embedding_net_is_transformer_then_backbone() -> None:
    transformer = SpatialTransformer("identity", None, output_size=(8, 8), input_size=8)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6).double())
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = EmbeddingNet(transformer, backbone)(images)
    assert out.dtype == torch.float32 and torch.allclose(out, backbone(images).float())
