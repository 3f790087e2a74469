"""dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network of dlib's ``dnn_face_recognition_ex.cpp`` / ``face_recognition_model_v1``: a 29-convolution
ResNet on a 150x150 RGB chip, ending in a 128-d descriptor (no BatchNorm, no normalisation: the raw
output of dlib's ``fc_no_bias``). Its weights come from dlib's ``.dat`` file through
:mod:`stn_face.nn.pretrained` (``backbone=dlib_resnet``); this module reads no files.

dlib's conventions kept here, because the weights depend on them:

- input: ``(pixel - mean_c) / 256`` per RGB channel (dlib's ``input_rgb_image_sized``). The backbone takes
  tensors normalised as the project's data pipeline makes them (``(pixel / 255 - data_mean) / data_std``)
  and converts them to dlib's input itself, so the data pipeline and the spatial transformer stay as
  they are;
- a convolution with stride 2 has no padding, one with stride 1 pads by half its size (dlib's defaults);
- the trained network holds ``affine`` layers (BatchNorm folded into a per-channel scale and shift);
- a downsampling unit adds its 3x3/2 convolution branch to a 2x2/2 average pool of its input; when the
  two differ in size (8 -> 3 vs 4 pixels, 4 -> 1 vs 2) dlib adds them as if the smaller one were
  zero-padded at the bottom and right (and in the extra channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAffine(nn.Module):
    """``x * weight + bias`` per channel: dlib's ``affine`` layer (a BatchNorm with frozen statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` where the smaller tensor counts as zero-padded to the larger one in channels, rows and
    columns (at the end of each): dlib's ``add_prev`` on tensors of different sizes."""
    if a.shape == b.shape:
        return a + b
    channels = max(a.shape[1], b.shape[1])
    height = max(a.shape[2], b.shape[2])
    width = max(a.shape[3], b.shape[3])

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


class DlibResidualUnit(nn.Module):
    """conv3x3-affine-relu-conv3x3-affine, added to the input (a 2x2/2 average pool of it when the unit
    downsamples), then relu."""

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if downsample else 1)
        self.affine1 = ChannelAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)
        self.affine2 = ChannelAffine(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(padded_add(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: ``(B, 3, 150, 150)`` chips normalised like the data pipeline ->
    ``(B, 128)`` descriptors (dlib's distance threshold for "same person" is 0.6 in Euclidean distance).

    ``widths``/``units``: channels and residual units per stage; every stage but the first starts with a
    downsampling unit (dlib: 32 x 3, 64 x 4, 128 x 3, 256 x 3, 256 x 1). ``pixel_mean``/``pixel_scale``:
    dlib's input normalisation (``pixel_mean`` is replaced by the means stored in the weights file).
    ``data_mean``/``data_std``: the normalisation of the tensors this backbone receives.
    ``weights``: the ``.dat`` file the backbone is meant to start from (read by
    :func:`stn_face.nn.pretrained.load_pretrained`, not here).
    """

    pretrained_format = "dlib"

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        units: Sequence[int] = (3, 4, 3, 3, 1),
        stem_width: int = 32,
        embedding_size: int = 128,
        input_size: int = 150,
        pixel_mean: Sequence[float] = (122.782, 117.001, 104.298),
        pixel_scale: float = 256.0,
        data_mean: Sequence[float] = (0.5, 0.5, 0.5),
        data_std: Sequence[float] = (0.5, 0.5, 0.5),
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != len(units):
            raise ValueError(f"widths {list(widths)} and units {list(units)} must have the same length")
        self.stem_conv = nn.Conv2d(3, stem_width, 7, stride=2, padding=0)
        self.stem_affine = ChannelAffine(stem_width)
        units_list: list[nn.Module] = []
        channels = stem_width
        for stage, (width, count) in enumerate(zip(widths, units)):
            for index in range(count):
                units_list.append(DlibResidualUnit(channels, width, downsample=stage > 0 and index == 0))
                channels = width
        self.units = nn.Sequential(*units_list)
        self.fc = nn.Linear(channels, embedding_size, bias=False)
        self.register_buffer("pixel_mean", torch.tensor([float(m) for m in pixel_mean]))
        self.register_buffer("data_mean", torch.tensor([float(m) for m in data_mean]), persistent=False)
        self.register_buffer("data_std", torch.tensor([float(s) for s in data_std]), persistent=False)
        self.pixel_scale = float(pixel_scale)
        self.embedding_size = embedding_size
        self.input_size = input_size
        self.widths, self.stage_units = tuple(widths), tuple(units)
        self.weights = weights

    def to_dlib_input(self, x: torch.Tensor) -> torch.Tensor:
        """Data-pipeline tensors -> dlib's ``(pixel - mean) / 256``."""
        pixels = (x * self.data_std.view(1, 3, 1, 1) + self.data_mean.view(1, 3, 1, 1)) * 255.0
        return (pixels - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            # the network pools globally, so another size would run and give descriptors dlib never made
            raise ValueError(f"DlibResNet takes {self.input_size}x{self.input_size} chips, got "
                             f"{x.shape[-2]}x{x.shape[-1]}: drop the transform.output_size override (it follows "
                             f"backbone.input_size) or set transform.output_size=[{self.input_size},{self.input_size}]")
        x = F.relu(self.stem_affine(self.stem_conv(self.to_dlib_input(x))))
        x = self.units(F.max_pool2d(x, 3, 2))
        return self.fc(x.mean(dim=(2, 3)))

    def parameter_layers(self) -> list[tuple[str, nn.Module]]:
        """The convolution, affine and fully connected layers in the order dlib stores them (input first)."""
        layers: list[tuple[str, nn.Module]] = [("stem_conv", self.stem_conv), ("stem_affine", self.stem_affine)]
        for i, unit in enumerate(self.units):
            layers += [(f"units.{i}.{name}", getattr(unit, name)) for name in ("conv1", "affine1", "conv2", "affine2")]
        return layers + [("fc", self.fc)]
