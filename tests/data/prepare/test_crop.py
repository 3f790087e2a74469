"""Crop geometry on real photos, and crop_photo: the one path the workers and FaceEmbedder.crop share."""

from __future__ import annotations

import cv2
import numpy as np

from stn_face.data.detect import MTCNNDetector
from stn_face.data.images import read_rgb
from stn_face.data.prepare import (
    DETECTED,
    FALLBACK,
    CropSettings,
    center_crop,
    crop_path_map,
    crop_photo,
    jpeg_roundtrip,
    prepare_collection,
    read_manifest,
)
from tests.data.prepare.conftest import NO_FACE_PHOTO

ARCFACE_EYES = np.array([[38.2946, 51.6963], [73.5318, 51.5014]], np.float32)


def _redetect(crop: np.ndarray, detector: MTCNNDetector, pad: int) -> np.ndarray:
    """Landmarks of the face in a tight crop: detected with a black frame around it for context."""
    framed = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    faces = detector.detect(framed)
    assert len(faces) >= 1
    return max(faces, key=lambda f: f.score)


def test_crop_and_landmarks_modes_geometry(lfw_dir, celeba_dir, tmp_path):
    files = ["Abel_Pacheco/Abel_Pacheco_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg",
             "George_W_Bush/George_W_Bush_0001.jpg"]
    detector = MTCNNDetector()
    aligned = tmp_path / "aligned"
    summary = prepare_collection(lfw_dir / "lfw-deepfunneled", aligned, CropSettings(mode="landmarks", size=112),
                                 files=files, workers=1, progress=False)
    assert summary.detected == 3
    for source, path in crop_path_map(aligned).items():
        crop = read_rgb(path)
        assert crop.shape == (112, 112, 3)
        face = _redetect(crop, detector, pad=40)
        eyes = face.landmarks[:2] - 40
        assert np.abs(eyes - ARCFACE_EYES).max() < 4.0, (source, eyes)

    squares = tmp_path / "squares"
    prepare_collection(lfw_dir / "lfw-deepfunneled", squares, CropSettings(margin=1.3, size=128), files=files,
                       workers=1, progress=False)
    for source, path in crop_path_map(squares).items():
        crop = read_rgb(path)
        face = _redetect(crop, detector, pad=0)
        # the face box sits in the middle and its longer side is 1/1.3 of the crop
        assert np.allclose(face.center, (64, 64), atol=8), (source, face.box)
        assert 0.85 < max(face.width, face.height) * 1.3 / 128 < 1.15, (source, face.box)

    # no face: the centre square of fallback_fraction x the shorter side, in both modes
    fallback = tmp_path / "fallback"
    prepare_collection(celeba_dir, fallback, CropSettings(mode="landmarks", size=112, fallback_fraction=0.5),
                       files=[NO_FACE_PHOTO], workers=1, progress=False)
    row = read_manifest(fallback)[0]
    assert row["status"] == "fallback_center"
    photo = read_rgb(celeba_dir / NO_FACE_PHOTO)
    h, w = photo.shape[:2]
    side = round(0.5 * min(h, w))
    x0, y0 = round(w / 2 - side / 2), round(h / 2 - side / 2)
    expected = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(read_rgb(fallback / row["output"]).astype(int) - expected).mean() < 4  # JPEG noise only


def test_crop_photo_is_what_the_preparation_writes(lfw_dir, celeba_dir, tmp_path):
    source = "Colin_Powell/Colin_Powell_0001.jpg"
    photo = read_rgb(lfw_dir / "lfw-deepfunneled" / source)
    detector, settings = MTCNNDetector(), CropSettings()
    result = crop_photo(photo, settings, detector)
    assert result.status == DETECTED and result.crop.shape == (128, 128, 3)
    assert 0.99 < result.face.score <= 1.0
    # given the detections instead of the detector: the same crop
    again = crop_photo(photo, settings, detector.detect(photo))
    assert np.array_equal(again.crop, result.crop) and again.face.box == result.face.box
    prepare_collection(lfw_dir / "lfw-deepfunneled", tmp_path / "out", settings, files=[source], workers=1,
                       progress=False)
    assert np.array_equal(read_rgb(crop_path_map(tmp_path / "out")[source]),
                          jpeg_roundtrip(result.crop, settings.jpeg_quality))

    no_face = read_rgb(celeba_dir / NO_FACE_PHOTO)
    fallback = crop_photo(no_face, settings, detector)
    assert fallback.status == FALLBACK and fallback.face is None
    assert np.array_equal(fallback.crop, center_crop(no_face, settings))
