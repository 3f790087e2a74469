"""Crop geometry: the square around a detected face, the 5-point alignment, the centre fallback, and
:func:`crop_photo`, the one path from a photo to its crop (preparation workers and ``FaceEmbedder.crop``).

Images are uint8 RGB arrays ``(H, W, 3)``; points are ``(x, y)`` in the image's pixels.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from stn_face.data.detect import Detection, FaceDetector, select_face
from stn_face.data.prepare.manifest import DETECTED, FALLBACK
from stn_face.data.prepare.settings import CropSettings, PrepareError

_BORDER_MODES = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}  # settings.BORDERS


def crop_square(center: tuple[float, float], side: float) -> tuple[int, int, int]:
    """The pixel square :func:`square_crop` cuts: ``(x0, y0, s)``, side ``s = round(side)`` (at least 1),
    top-left corner rounded to a pixel so the square is centred on ``center`` (x, y)."""
    s = max(1, round(side))
    return round(center[0] - s / 2.0), round(center[1] - s / 2.0), s


def points_in_face_crop(box: np.ndarray, points: np.ndarray, margin: float) -> np.ndarray:
    """Source-pixel ``points`` ``(N, 2)`` in unit coordinates ``[0, 1]`` of the ``crop``-mode crop of the face
    in ``box`` ``(4,)`` (``x1 y1 x2 y2``): the square :func:`face_crop` cuts, with source
    pixel ``i`` spanning ``[i - 0.5, i + 0.5]``, so ``p`` lands at ``(p - x0 + 0.5) / s``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x0, y0, s = crop_square(((x1 + x2) / 2.0, (y1 + y2) / 2.0), margin * max(x2 - x1, y2 - y1))
    return (np.asarray(points, dtype=np.float64) - np.array([x0, y0]) + 0.5) / s


def square_crop(image: np.ndarray, center: tuple[float, float], side: float, size: int,
                border: str = "constant") -> np.ndarray:
    """The square of ``side`` pixels centred on ``center`` (x, y) (:func:`crop_square`), padded where it
    leaves the image, resized to ``size`` x ``size`` (area averaging when shrinking)."""
    height, width = image.shape[:2]
    x0, y0, s = crop_square(center, side)
    x1, y1 = x0 + s, y0 + s
    inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    if inner.size == 0:
        raise ValueError(f"crop square {(x0, y0, x1, y1)} lies outside the {width}x{height} image")
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if any(pads):
        inner = cv2.copyMakeBorder(inner, *pads, _BORDER_MODES[border], value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(inner, (size, size), interpolation=interpolation)


@functools.lru_cache(maxsize=1)
def insightface_norm_crop() -> Callable[..., np.ndarray]:
    """``insightface.utils.face_align.norm_crop``, loaded without running ``insightface/__init__``.

    That package initialiser imports its model zoo and, through albumentations, torch: over ten
    seconds and hundreds of MB in every worker process, for a module that only needs cv2, numpy and
    scikit-image. Loaded from its file instead (or taken from ``sys.modules`` if already imported).
    """
    module = sys.modules.get("insightface.utils.face_align")
    if module is None:
        spec = importlib.util.find_spec("insightface")
        if spec is None or not spec.submodule_search_locations:
            raise PrepareError("mode=landmarks needs insightface: pip install insightface")
        path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "face_align.py"
        file_spec = importlib.util.spec_from_file_location("_stn_face_insightface_face_align", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    return module.norm_crop


def face_crop(image: np.ndarray, face: Detection, settings: CropSettings) -> np.ndarray:
    """The crop of one detected face according to ``settings.mode``."""
    if settings.mode == "landmarks":
        norm_crop = insightface_norm_crop()
        with warnings.catch_warnings():  # scikit-image >= 0.26 deprecates the estimate() insightface calls
            warnings.simplefilter("ignore", FutureWarning)
            return norm_crop(image, np.asarray(face.landmarks, dtype=np.float32), image_size=settings.size)
    side = settings.margin * max(face.width, face.height)
    return square_crop(image, face.center, side, settings.size, settings.border)


def center_crop(image: np.ndarray, settings: CropSettings) -> np.ndarray:
    """The fallback when no face is found: the centre square, resized to ``settings.size``."""
    height, width = image.shape[:2]
    side = settings.fallback_size or settings.fallback_fraction * min(height, width)
    return square_crop(image, (width / 2.0, height / 2.0), side, settings.size, settings.border)


class CropResult(NamedTuple):
    crop: np.ndarray  # (size, size, 3) uint8 RGB
    status: str  # DETECTED or FALLBACK, the manifest's statuses
    face: Detection | None  # the chosen face in the image's pixels; None for the centre fallback


def crop_photo(image: np.ndarray, settings: CropSettings,
               detector: FaceDetector | Sequence[Detection]) -> CropResult:
    """The crop of the face in a photo: the face chosen by ``settings.face_selection``, cropped by
    ``settings.mode``, or the centre square when there is none.

    ``detector`` is a :class:`FaceDetector`, or the detections it already returned for this image (the
    preparation detects whole batches of photos at once).
    """
    detections = detector.detect(image) if hasattr(detector, "detect") else detector
    face = select_face(detections, image.shape, settings.face_selection)
    if face is None:
        return CropResult(center_crop(image, settings), FALLBACK, None)
    return CropResult(face_crop(image, face, settings), DETECTED, face)


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    """The JPEG file of an RGB image, as the preparation writes crops."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"JPEG encoding failed for an image of shape {image_rgb.shape}")
    return encoded.tobytes()


def jpeg_roundtrip(image_rgb: np.ndarray, quality: int) -> np.ndarray:
    """The image as it reads back from its JPEG crop file (so a crop made in memory matches a cached one)."""
    data = np.frombuffer(encode_jpeg(image_rgb, quality), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
