"""Deterministic geometric jitter for evaluation crops (the misalignment study).

Every evaluation image ``index`` gets its own random rotation, scale, shift and perspective drawn
from a generator seeded by ``(seed, index)``, so every model variant is tested on exactly the same
misaligned images, whatever the batch size, worker count or process count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from stn_face.data.datasets import FaceImageDataset
from stn_face.data.images import read_rgb


def jitter_homography(rng: np.random.Generator, height: int, width: int, rotate_limit: float = 0.0,
                      scale_limit: float = 0.0, shift_px: float = 0.0, perspective: float = 0.0) -> np.ndarray:
    """A ``3x3`` pixel homography (source -> destination): rotation by U(±rotate_limit) degrees and
    scale by U(1 ± scale_limit) about the centre, shift by U(±shift_px) pixels in x and y, then each
    corner moved by N(0, s) x size with s ~ U(0, perspective) (Albumentations' Perspective)."""
    angle = rng.uniform(-rotate_limit, rotate_limit)
    scale = rng.uniform(1 - scale_limit, 1 + scale_limit)
    shift = rng.uniform(-shift_px, shift_px, size=2)
    strength = rng.uniform(0.0, perspective)
    offsets = rng.normal(0.0, 1.0, size=(4, 2)) * strength * np.array([width, height])
    centre = ((width - 1) / 2, (height - 1) / 2)
    affine = np.vstack([cv2.getRotationMatrix2D(centre, angle, scale), [0.0, 0.0, 1.0]])
    affine[:2, 2] += shift
    if strength > 0:
        square = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
        moved = (square + offsets).astype(np.float32)
        affine = affine @ cv2.getPerspectiveTransform(square, moved)
    return affine


def item_jitter(index: int, height: int, width: int, seed: int = 0, rotate_limit: float = 0.0,
                scale_limit: float = 0.0, shift_px: float = 0.0, perspective: float = 0.0) -> np.ndarray:
    """The ``3x3`` pixel homography of item ``index``: :func:`jitter_homography` drawn from a generator
    seeded by ``(seed, index)``."""
    rng = np.random.default_rng([int(seed), int(index)])
    return jitter_homography(rng, height, width, rotate_limit, scale_limit, shift_px, perspective)


def jitter_image(image: np.ndarray, index: int, seed: int = 0, rotate_limit: float = 0.0, scale_limit: float = 0.0,
                 shift_px: float = 0.0, perspective: float = 0.0) -> np.ndarray:
    """Warp ``image (H, W, C) uint8`` by the jitter of item ``index`` (black outside the photo)."""
    height, width = image.shape[:2]
    matrix = item_jitter(index, height, width, seed, rotate_limit, scale_limit, shift_px, perspective)
    return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class JitteredFaceDataset(FaceImageDataset):
    """A :class:`FaceImageDataset` whose images are jittered deterministically (per index) before
    ``transform``. ``jitter`` holds :func:`jitter_image`'s keyword arguments (``seed``, limits)."""

    def __init__(self, paths: Sequence, labels: Sequence[int] | None, transform: Callable[..., dict],
                 jitter: dict | None = None) -> None:
        super().__init__(paths, labels, transform)
        self.jitter = dict(jitter or {})

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = jitter_image(np.ascontiguousarray(read_rgb(self.paths[index])), index, **self.jitter)
        return self.transform(image=np.ascontiguousarray(image))["image"], self.labels[index]


def rotation_of(matrix: np.ndarray) -> float:
    """The rotation (degrees) of a homography's linear part (for tests and reports)."""
    return math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
