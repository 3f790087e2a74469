"""The Table 2 experiment's own code: landmark coordinates, the MSE and the fit loop that trains a
:class:`stn_face.nn.landmark_regression.LandmarkRegressor` on tensors held in memory (``regress.py``).

Coordinates (documented for every function that takes them): points are ``(x, y)`` pairs,
``unit`` = crop pixel (pixel centres) / crop size, so the crop spans [0, 1]; ``grid`` = the
``grid_sample`` convention with ``align_corners=False``, [-1, 1]; ``grid = 2 unit - 1``. An MSE in
grid units is exactly :data:`GRID_MSE_PER_UNIT_MSE` times the same MSE in unit coordinates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

COORDINATES = ("unit", "grid")
# grid = 2 * unit - 1 doubles every error, so squared errors grow by 4
GRID_MSE_PER_UNIT_MSE = 4.0


def pixels_to_unit(points: torch.Tensor, size: float) -> torch.Tensor:
    """Pixel coordinates of a ``size`` x ``size`` crop (pixel ``i`` spans [i - 0.5, i + 0.5]) to unit
    coordinates: ``(points + 0.5) / size``. Shapes: ``(..., 2)`` -> ``(..., 2)``."""
    return (points + 0.5) / float(size)


def unit_to(points: torch.Tensor, coordinates: str) -> torch.Tensor:
    """Unit coordinates ``(..., 2)`` in [0, 1] to ``coordinates`` (``unit`` or ``grid``)."""
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates={coordinates!r} is unknown; use one of {', '.join(COORDINATES)}")
    return points if coordinates == "unit" else 2.0 * points - 1.0


def mse_in(mse: float, trained: str, wanted: str) -> float:
    """An MSE measured in ``trained`` coordinates expressed in ``wanted`` coordinates."""
    for name in (trained, wanted):
        if name not in COORDINATES:
            raise ValueError(f"coordinates={name!r} is unknown; use one of {', '.join(COORDINATES)}")
    factor = {"unit": 1.0, "grid": GRID_MSE_PER_UNIT_MSE}
    return float(mse) * factor[wanted] / factor[trained]


def landmark_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean of the squared coordinate errors over every landmark coordinate of every image
    (``nn.MSELoss``'s mean reduction). Shapes: ``(B, K, 2)`` and ``(B, K, 2)`` -> scalar."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(predicted, target)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's landmarks for every image, in evaluation mode (BatchNorm running statistics);
    the model's training mode is restored afterwards. Shapes: ``(N, C, H, W)`` -> ``(N, K, 2)``."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor, *,
        steps: int, batch_size: int, generator: torch.Generator,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        on_step: Callable[[int, float], None] | None = None) -> None:
    """Minimise :func:`landmark_mse` for ``steps`` optimiser steps on batches of ``batch_size``
    drawn without replacement, reshuffled (by ``generator``) at every pass over ``images``; a pass's
    last incomplete batch is dropped, so every batch has ``batch_size`` images for BatchNorm.
    ``scheduler`` is stepped after every optimiser step, ``on_step(step, loss)`` called (1-based).
    Shapes: images ``(N, C, H, W)``, targets ``(N, K, 2)``.
    """
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} landmark sets")
    per_pass = len(images) // batch_size
    if per_pass < 1:
        raise ValueError(f"{len(images)} training images do not fill one batch of {batch_size}")
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.randperm(len(images), generator=generator)
        batch = order[(step % per_pass) * batch_size:(step % per_pass + 1) * batch_size]
        loss = landmark_mse(model(images[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
