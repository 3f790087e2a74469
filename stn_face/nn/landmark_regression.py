"""Landmark regression with a localization net (the paper's Table 2 experiment, Tang et al. 2020).

The paper compares its localization-network settings by training each to regress the facial
landmarks the face detector found, with a mean-squared-error loss. :class:`LandmarkRegressor` is a
localization net whose final layer predicts the ``2 K`` landmark coordinates instead of transform
parameters. The experiment's own coordinates, loss and fit loop are in
``experiments/paper_table2/landmark_fit.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from stn_face.geometry import resize_antialiased

__all__ = ["LandmarkRegressor"]


class LandmarkRegressor(nn.Module):
    """A localization net regressing ``num_landmarks`` points.

    ``localization`` builds the net (a ``localization=`` config, ``_partial_``) with
    ``num_params = 2 num_landmarks`` outputs: its final fully connected layer becomes the landmark
    layer. That layer starts at zero weights and a bias of ``init_landmarks`` (the training set's mean
    shape), so training starts from the mean-shape predictor, the baseline every result is compared
    with. The net sees its ``input_size`` (64 in every Table 2 setting) as in the transformer: larger
    images are resized with antialiasing (:func:`stn_face.geometry.resize_antialiased`).

    Shapes: images ``(B, C, H, W)`` -> landmarks ``(B, num_landmarks, 2)`` in the coordinates of
    ``init_landmarks`` / the training targets.
    """

    def __init__(self, localization: Callable[..., nn.Module], num_landmarks: int = 5,
                 init_landmarks: torch.Tensor | None = None) -> None:
        super().__init__()
        if num_landmarks <= 0:
            raise ValueError(f"num_landmarks={num_landmarks} must be positive")
        self.num_landmarks = int(num_landmarks)
        init = None if init_landmarks is None else torch.as_tensor(init_landmarks, dtype=torch.float32).reshape(-1)
        self.net = localization(num_params=2 * self.num_landmarks, init_params=init)
        self.input_size = int(self.net.input_size)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """The net's input: ``images`` resized to ``input_size`` as :meth:`forward` does (resizing a
        data set once beforehand gives the same numbers as resizing every batch)."""
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        return resize_antialiased(images, (self.input_size, self.input_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.resize(images)).reshape(images.shape[0], self.num_landmarks, 2)
