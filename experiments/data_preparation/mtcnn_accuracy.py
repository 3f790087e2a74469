"""Landmark accuracy of a 5-point face detector: the mirror test and agreement with a reference (this
experiment's measurement, used by ``measure_detector.py`` and ``onnx_by_opencv.py`` beside it).

Errors are in inter-ocular distances (IOD, the distance between the two eye points), per image.
Points are ``(5, 2)`` arrays ``(x, y)`` in the order of :mod:`stn_face.data.detect` (left eye, right
eye, nose, left mouth corner, right mouth corner; "left" = image left), in 0-based pixel coordinates
(pixel column ``j`` at ``x = j``), so mirroring maps ``x`` to ``width - 1 - x``.

The mirror test needs no ground truth: a detector without bias finds on the mirrored photo the
mirror image of what it found on the photo. A constant horizontal shift of the points (a bias of the
weights, or of the coordinate convention) shows up twice over, as ``signed_dx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stn_face.data.detect import Detection, select_face

# after mirroring, the image-left eye / mouth corner is the former right one
MIRROR_ORDER = (1, 0, 2, 4, 3)


def mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    """Points found on a horizontally mirrored image, in the unmirrored image's frame and order."""
    out = np.asarray(points, dtype=np.float64)[list(MIRROR_ORDER)].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


@dataclass(frozen=True)
class MirrorResult:
    """Per-image results of the mirror test over the images where both runs found a face."""

    errors: np.ndarray  # (N,) mean distance over the 5 points, IOD
    eye_errors: np.ndarray  # (N,) mean over the two eyes, IOD
    signed_dx: np.ndarray  # (N,) mean x of mirrored-back minus original points, pixels
    missed: int  # images where the photo or its mirror gave no face

    def summary(self) -> dict[str, float]:
        return {"images": len(self.errors), "missed": self.missed,
                "median_iod": float(np.median(self.errors)), "median_eyes_iod": float(np.median(self.eye_errors)),
                "mean_signed_dx_px": float(np.mean(self.signed_dx))}


def mirror_test(detect_batch, images: Sequence[np.ndarray], policy: str = "central") -> MirrorResult:
    """Detect on each image and on its mirror (``detect_batch(list) -> list[list[Detection]]``), keep
    one face per image by ``policy`` and compare the points."""
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    found = detect_batch([*images, *mirrored])
    errors, eyes, signed, missed = [], [], [], 0
    for k, image in enumerate(images):
        a = select_face(found[k], image.shape, policy)
        b = select_face(found[len(images) + k], image.shape, policy)
        if a is None or b is None:
            missed += 1
            continue
        pa = a.landmarks.astype(np.float64)
        pb = mirror_points(b.landmarks, image.shape[1])
        dist = np.linalg.norm(pa - pb, axis=1) / np.linalg.norm(pa[1] - pa[0])
        errors.append(dist.mean())
        eyes.append(dist[:2].mean())
        signed.append((pb[:, 0] - pa[:, 0]).mean())
    return MirrorResult(np.asarray(errors), np.asarray(eyes), np.asarray(signed), missed)


def eye_agreement(faces: Sequence[Detection | None], reference_eyes: Sequence[np.ndarray | None]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Eye points against a reference's ``(2, 2)`` eye centres (image-left first), where both exist:
    per-image mean eye distance in the reference's IOD (N,) and the mean offset (N, 2) in IOD."""
    errors, offsets = [], []
    for face, ref in zip(faces, reference_eyes):
        if face is None or ref is None:
            continue
        ref = np.asarray(ref, dtype=np.float64)
        d = (face.landmarks[:2].astype(np.float64) - ref) / np.linalg.norm(ref[1] - ref[0])
        errors.append(np.linalg.norm(d, axis=1).mean())
        offsets.append(d.mean(axis=0))
    return np.asarray(errors), np.asarray(offsets).reshape(-1, 2)
