"""Workers: reading unusual files, worker processes that crash, and the one-process batched path
(the way an accelerator is fed) giving exactly what the worker processes give."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stn_face.data.detect import MTCNNDetector
from stn_face.data.images import ImageReadError, read_rgb
from stn_face.data.prepare import CropSettings, PrepareError, prepare_collection, read_manifest
from stn_face.data.prepare.plan import Task
from stn_face.data.prepare.workers import build_detector, detect_all, run_in_process
from tests.data.prepare.conftest import lfw_photo


def test_read_rgb_conversions_and_errors(mixed_input):
    root, expected = mixed_input
    for rel, status in expected.items():
        if rel.endswith(".txt"):
            continue
        if status.startswith("failed"):
            with pytest.raises(ImageReadError) as info:
                read_rgb(root / rel)
            assert info.value.reason.startswith(status.removeprefix("failed: ")), rel
        else:
            image = read_rgb(root / rel, max_pixels=1_000_000)  # also exercise the downscaling
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, rel
            assert image.shape[0] * image.shape[1] <= 1_000_000 and image.flags.c_contiguous
            assert 20 < image.mean() < 235, rel
    gray = read_rgb(root / "person_a/gray.jpg")
    assert np.array_equal(gray[:, :, 0], gray[:, :, 2])  # grayscale expanded to three equal channels
    # 16-bit values are scaled, not clipped: the 16-bit copy matches the 8-bit original
    original = np.asarray(Image.open(root / "person_b/gray16.png")).astype(np.float64) / 257
    assert np.abs(read_rgb(root / "person_b/gray16.png")[:, :, 0] - original).max() <= 0.5
    with pytest.raises(ImageReadError, match="too large"):
        read_rgb(root / "person_c/huge.jpg", downscale=False)
    with pytest.raises(ImageReadError, match="file not found"):
        read_rgb(root / "missing.jpg")


def _photos(lfw_dir: Path) -> list[str]:
    return [f"{name}/{name}_{i:04d}.jpg" for name in ("Aaron_Peirsol", "Colin_Powell") for i in (1, 2, 3)]


@pytest.mark.slow
def test_one_process_batches_give_what_worker_processes_give(lfw_dir, tmp_path):
    photos = lfw_dir / "lfw-deepfunneled"
    files = _photos(lfw_dir)
    prepare_collection(photos, tmp_path / "processes", files=files, workers=2, photos_per_batch=2, progress=False)
    expected = {r["source"]: r for r in read_manifest(tmp_path / "processes")}
    assert len(expected) == 6 and all(r["status"] == "detected" for r in expected.values())

    # the accelerator path on the CPU: batches of 4 (and a last one of 2), three threads reading
    out = tmp_path / "one-process"
    tasks = [Task(s, s.split("/")[0], str(photos / s), s, str(out)) for s in files]
    rows: list[dict[str, str]] = []
    run_in_process(tasks, CropSettings(), build_detector(None), 4, 3, rows.append)
    assert {r["source"]: r for r in rows} == expected
    for source in files:
        assert (out / source).read_bytes() == (tmp_path / "processes" / source).read_bytes()

    # one worker runs in this process, on the same path
    single = prepare_collection(photos, tmp_path / "single", files=files, workers=1, photos_per_batch=4,
                                progress=False)
    assert single.detected == 6 and {r["source"]: r for r in read_manifest(tmp_path / "single")} == expected


def test_detect_all_matches_one_detect_per_image(lfw_dir):
    detector = MTCNNDetector()
    images = [read_rgb(lfw_dir / "lfw-deepfunneled" / s) for s in _photos(lfw_dir)[:3]]
    together = detect_all(detector, images)
    for image, faces in zip(images, together):
        alone = detector.detect(image)
        assert len(faces) == len(alone) >= 1
        np.testing.assert_allclose([f.box for f in faces], [f.box for f in alone], atol=0.05)


class CpuOnlyDetector:
    """A detector without a device argument (like any plain FaceDetector)."""

    def __init__(self) -> None:
        self.inner = MTCNNDetector()

    def detect(self, image_rgb):
        return self.inner.detect(image_rgb)


def test_a_detector_without_a_device_argument_runs_on_the_cpu_only(lfw_dir, tmp_path):
    with pytest.raises(PrepareError, match="no device argument"):
        prepare_collection(lfw_dir / "lfw-deepfunneled", tmp_path / "out", files=_photos(lfw_dir)[:1],
                           detector=CpuOnlyDetector, device="cuda", progress=False)
    done = prepare_collection(lfw_dir / "lfw-deepfunneled", tmp_path / "out", files=_photos(lfw_dir)[:1],
                              detector=CpuOnlyDetector, workers=1, progress=False)
    assert done.detected == 1 and done.device == "cpu"


class CrashingDetector:
    """Kills its worker process on a black image, like a decoder segfault would."""

    def __init__(self) -> None:
        self.inner = MTCNNDetector()

    def detect(self, image_rgb):
        if image_rgb.max() == 0:
            os._exit(1)
        return self.inner.detect(image_rgb)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["0_black.png", "black.png"])  # crashing first / last in sorted order
def test_a_crashing_worker_fails_one_file_not_the_run(lfw_dir, tmp_path, bad):
    raw = tmp_path / "raw"
    (raw / "p").mkdir(parents=True)
    for i in (1, 2, 3):
        shutil.copyfile(lfw_photo(lfw_dir, "Aaron_Peirsol", i), raw / "p" / f"{i}.jpg")
    # sorted first, the crash also takes down the photo queued behind it in the same worker: each
    # suspect must then be retried alone, or a good photo is recorded as the crash
    cv2.imwrite(str(raw / "p" / bad), np.zeros((60, 60, 3), np.uint8))
    summary = prepare_collection(raw, tmp_path / "out", workers=2, detector=CrashingDetector, progress=False)
    status = {r["source"]: r["status"] for r in read_manifest(tmp_path / "out")}
    assert status == {"p/1.jpg": "detected", "p/2.jpg": "detected", "p/3.jpg": "detected",
                      f"p/{bad}": "failed: worker process crashed on this file"}
    assert summary.processed == 4
