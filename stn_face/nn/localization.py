"""The localization network: a small CNN that predicts transform parameters from a 64x64 copy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stn_face.geometry import resize_antialiased


class LocalizationNet(nn.Module):
    """``conv_channels`` blocks of 3x3 conv + BatchNorm + ReLU + 2x2 max-pool, then ``fc_dims`` hidden
    fully connected layers (ReLU) and a final layer to ``num_params`` outputs.

    The final layer starts at zero weights and a bias equal to ``init_params``, so training starts
    from the transform those parameters describe (the identity, or a centred zoom).

    Shapes: ``(B, C, H, W)`` in (any size; resized to ``input_size`` with antialiasing, so a 144 crop is
    filtered, not subsampled) -> ``(B, num_params)``.
    The paper's Table 2 settings are conv/fc counts of 1/1, 2/1, 3/1 (default), 2/2 and 3/2.
    """

    def __init__(
        self,
        num_params: int,
        init_params: torch.Tensor | Sequence[float] | None = None,
        conv_channels: Sequence[int] = (32, 64, 128),
        fc_dims: Sequence[int] = (),
        input_size: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_params <= 0:
            raise ValueError("a localization net needs a transform with at least one parameter")
        if len(conv_channels) < 1:
            raise ValueError("a localization net needs at least one convolution block")
        self.input_size = int(input_size)
        blocks: list[nn.Module] = []
        channels = in_channels
        for out_channels in conv_channels:
            blocks += [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        spatial = self.input_size // (2 ** len(conv_channels))
        if spatial < 1:
            raise ValueError(f"{len(conv_channels)} pooling blocks shrink a {input_size}px input to nothing")
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * spatial * spatial
        for hidden in fc_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.fc = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_params)
        init = torch.zeros(num_params) if init_params is None else torch.as_tensor(init_params, dtype=torch.float32)
        if init.shape != (num_params,):
            raise ValueError(f"init_params must have shape ({num_params},), got {tuple(init.shape)}")
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = resize_antialiased(images, (self.input_size, self.input_size))
        return self.head(self.fc(self.features(images)))
