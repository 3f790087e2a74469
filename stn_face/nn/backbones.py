"""Face embedding backbones: the paper's ResNet (and its CPU-sized variant) and IResNet.

Every backbone maps ``(B, 3, input_size, input_size)`` aligned faces to ``(B, embedding_size)``
embeddings and ends with a BatchNorm1d on the embedding. That BatchNorm is non-affine by default:
with few classes a learnable bias drifted opposite every class centre and ArcFace collapsed (see
FINDINGS.md, "what failed").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class EmbeddingHead(nn.Module):
    """BatchNorm2d (optional), dropout, fully connected layer to the embedding, BatchNorm1d."""

    def __init__(self, channels: int, spatial: int, embedding_size: int, dropout: float,
                 bn2d: bool, affine: bool) -> None:
        super().__init__()
        self.bn2d = nn.BatchNorm2d(channels) if bn2d else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial * spatial, embedding_size)
        self.bn1d = nn.BatchNorm1d(embedding_size, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.bn2d(x), 1))
        return self.bn1d(self.fc(x).float())


class ResidualUnit(nn.Module):
    """Two 3x3 convolutions with BatchNorm and PReLU and an identity shortcut (the paper's unit)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.PReLU(channels),
            _conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.PReLU(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PaperResNet(nn.Module):
    """The ResNet of the paper's Table 1: each stage is a stride-2 3x3 convolution followed by
    ``units[i]`` residual units at ``widths[i]`` channels; then dropout, a fully connected layer to
    ``embedding_size`` and BatchNorm. Paper: widths 64-128-256-512, units 2-4-8-2, embedding 512
    (about 3.9 GMACs at 112x112). The ``small`` config shrinks widths and units for the CPU.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        units: Sequence[int] = (2, 4, 8, 2),
        embedding_size: int = 512,
        dropout: float = 0.0,
        embedding_bn_affine: bool = False,
        input_size: int = 112,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != len(units):
            raise ValueError(f"widths {list(widths)} and units {list(units)} must have the same length")
        stages: list[nn.Module] = []
        channels = in_channels
        for width, count in zip(widths, units):
            stages.append(nn.Sequential(
                _conv3x3(channels, width, stride=2), nn.BatchNorm2d(width), nn.PReLU(width),
                *[ResidualUnit(width) for _ in range(count)],
            ))
            channels = width
        self.stages = nn.Sequential(*stages)
        spatial = input_size // (2 ** len(widths))
        self.head = EmbeddingHead(channels, spatial, embedding_size, dropout, bn2d=False,
                                  affine=embedding_bn_affine)
        self.embedding_size = embedding_size
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))


class IBasicBlock(nn.Module):
    """The improved residual block of ArcFace's IResNet: BN-conv-BN-PReLU-conv-BN."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), _conv3x3(in_channels, channels), nn.BatchNorm2d(channels),
            nn.PReLU(channels), _conv3x3(channels, channels, stride), nn.BatchNorm2d(channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """IResNet (Deng et al., ArcFace) as insightface's arcface_torch builds it: ``layers`` blocks per
    stage, (2, 2, 2, 2) IResNet-18, (3, 4, 6, 3) -34, (3, 4, 14, 3) -50, (3, 13, 30, 3) -100.

    ``weights``: an arcface_torch ``backbone.pth`` (or a state dict in this class's layout) to start from,
    read by :func:`stn_face.nn.pretrained.load_pretrained`, not here. A network built for such weights
    has arcface_torch's embedding BatchNorm (``features``: affine with its weight frozen at 1 and a
    learned bias) so that it computes what arcface_torch's does; ``embedding_bn_affine`` applies to
    one trained from scratch. The input is RGB ``(x / 255 - 0.5) / 0.5``, as arcface_torch's and the
    data pipeline's.
    """

    pretrained_format = "arcface_torch"

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 14, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        embedding_size: int = 512,
        dropout: float = 0.0,
        embedding_bn_affine: bool = False,
        input_size: int = 112,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.layers = tuple(int(n) for n in layers)
        self.weights = weights
        self.stem = nn.Sequential(_conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        blocks: list[nn.Module] = []
        channels = widths[0]
        for width, count in zip(widths, layers):
            for index in range(count):
                blocks.append(IBasicBlock(channels, width, stride=2 if index == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        spatial = input_size // (2 ** len(layers))
        self.head = EmbeddingHead(channels, spatial, embedding_size, dropout, bn2d=True,
                                  affine=embedding_bn_affine or weights is not None)
        self.embedding_size = embedding_size
        _init_weights(self)
        if weights is not None:  # arcface_torch's `features`: weight 1, not trained
            nn.init.ones_(self.head.bn1d.weight)
            self.head.bn1d.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
