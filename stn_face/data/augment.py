"""The augmentation pipelines (albumentations) for training and evaluation crops: resize, flip, optional
jitter, normalise (:data:`stn_face.data.images.MEAN` / ``STD``) and HWC uint8 -> CHW float tensor.

(Not to be confused with the spatial transformer's ``transform`` family, :mod:`stn_face.geometry`.)"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from stn_face.data.images import MEAN, STD

__all__ = ["MEAN", "STD", "eval_batch", "eval_transform", "resize_for_eval", "train_transform"]


def eval_transform(image_size: int) -> A.Compose:
    """Resize to ``image_size`` square, normalise to [-1, 1], HWC uint8 -> CHW float tensor."""
    return A.Compose([
        A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA),
        A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0),
        ToTensorV2(),
    ])


def resize_for_eval(image: np.ndarray, image_size: int) -> np.ndarray:
    """:func:`eval_transform`'s resize alone: uint8 ``(H, W, 3)`` -> ``(S, S, 3)`` with OpenCV's area
    interpolation (returned as is when it has that size already)."""
    if image.shape[:2] == (image_size, image_size):
        return image
    return cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)


def eval_batch(images: Sequence[np.ndarray] | np.ndarray, image_size: int) -> torch.Tensor:
    """:func:`eval_transform` of a whole batch: uint8 RGB ``(H, W, 3)`` arrays of any sizes (or one
    ``(B, H, W, 3)`` array) -> float ``(B, 3, S, S)``, bitwise the tensors ``eval_transform(S)`` gives
    image by image, with one vectorised normalisation ``(v - 255 MEAN) / (255 STD)`` instead of one
    pipeline call per image (a fifth of a millisecond each on a 2-core CPU)."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == (image_size, image_size):
        pixels = np.array(images)  # a copy: a memory-mapped pack is read-only, torch wants writable memory
    else:
        pixels = np.stack([resize_for_eval(image, image_size) for image in images])
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    offset = torch.tensor([255.0 * m for m in MEAN]).view(1, 3, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * s) for s in STD]).view(1, 3, 1, 1)
    return ((batch - offset) * scale).contiguous()


def train_transform(image_size: int, hflip: float = 0.5, rotate_limit: float = 0.0, scale_limit: float = 0.0,
                    shift_px: float = 0.0, perspective: float = 0.0, jitter_p: float = 1.0) -> A.Compose:
    """Training pipeline: resize, horizontal flip (the paper's only augmentation) and optional
    geometric jitter (rotation in degrees, relative scale, shift in pixels, perspective strength) that
    misaligns faces on purpose for the misalignment study."""
    steps: list = [A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA)]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if rotate_limit or scale_limit or shift_px:
        steps.append(A.Affine(
            rotate=(-rotate_limit, rotate_limit),
            scale=(1 - scale_limit, 1 + scale_limit),
            translate_px=(-int(shift_px), int(shift_px)),
            interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, p=jitter_p,
        ))
    if perspective > 0:
        steps.append(A.Perspective(scale=(0.0, perspective), keep_size=True, border_mode=cv2.BORDER_CONSTANT,
                                   fill=0, p=jitter_p))
    steps += [A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(steps)
