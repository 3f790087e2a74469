"""The augmentation pipelines (albumentations) for training and evaluation crops: resize, flip, optional
jitter, normalise (:data:`stn_face.data.images.MEAN` / ``STD``) and HWC uint8 -> CHW float tensor.

(Not to be confused with the spatial transformer's ``transform`` family, :mod:`stn_face.geometry`.)"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from stn_face.data.images import MEAN, STD

__all__ = ["MEAN", "STD", "eval_transform", "train_transform"]


def eval_transform(image_size: int) -> A.Compose:
    """Resize to ``image_size`` square, normalise to [-1, 1], HWC uint8 -> CHW float tensor."""
    return A.Compose([
        A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA),
        A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0),
        ToTensorV2(),
    ])


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
