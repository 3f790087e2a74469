"""Preparation of real photos mixed with every kind of broken or unusual file.

Real photos come from $STN_FACE_DATA; the unusual files are made here from real photos (grayscale,
CMYK, RGBA, 16-bit, palette, 12000 x 12000) or are plainly broken (empty, truncated, not an image).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stn_face.data.detect import MTCNNDetector
from stn_face.data.images import ImageReadError, read_rgb
from stn_face.data.prepare import (
    MANIFEST_COLUMNS,
    PrepareError,
    crop_path_map,
    output_name,
    parse_numbers,
    prepare_collection,
    read_identity_list,
    read_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCFACE_EYES = np.array([[38.2946, 51.6963], [73.5318, 51.5014]], np.float32)
# A real CelebA photo in which MTCNN finds no face (from the full run on the subset).
NO_FACE_PHOTO = "07244/015190.jpg"


def _lfw(lfw_dir: Path, name: str, index: int) -> Path:
    return lfw_dir / "lfw-deepfunneled" / name / f"{name}_{index:04d}.jpg"


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory, lfw_dir, celeba_dir) -> tuple[Path, dict[str, str]]:
    """An input folder and the expected status (prefix) of every file in it."""
    root = tmp_path_factory.mktemp("raw")
    expected: dict[str, str] = {}

    def put(rel: str, status: str, source: Path | None = None, data: bytes | None = None) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source, path)
        elif data is not None:
            path.write_bytes(data)
        expected[rel] = status
        return path

    # identity a: LFW photos, two as they are, others made grayscale / CMYK / broken
    put("person_a/a1.jpg", "detected", _lfw(lfw_dir, "Aaron_Peirsol", 1))
    put("person_a/a2.jpg", "detected", _lfw(lfw_dir, "Aaron_Peirsol", 2))
    photo3 = Image.open(_lfw(lfw_dir, "Aaron_Peirsol", 3)).convert("RGB")
    photo3.convert("L").save(put("person_a/gray.jpg", "detected"))
    Image.open(_lfw(lfw_dir, "Aaron_Peirsol", 4)).convert("CMYK").save(put("person_a/cmyk.jpg", "detected"))
    put("person_a/empty.jpg", "failed: empty file", data=b"")
    real = _lfw(lfw_dir, "Abel_Pacheco", 1).read_bytes()
    put("person_a/truncated.jpg", "failed: truncated or corrupt image", data=real[: len(real) * 2 // 5])
    # identity b: CelebA photos, RGBA / 16-bit / palette versions, a text file named .jpg, a stray
    # non-image extension and a hidden file
    celeba = sorted((celeba_dir / "07201").glob("*.jpg"))
    put("person_b/b1.jpg", "detected", celeba[0])
    put("person_b/b2.jpg", "detected", celeba[1])
    rgba = Image.open(celeba[2]).convert("RGBA")
    rgba.save(put("person_b/rgba.png", "detected"))
    gray16 = np.asarray(Image.open(celeba[3]).convert("L")).astype(np.uint16) * 257
    cv2.imwrite(str(put("person_b/gray16.png", "detected")), gray16)
    rgb16 = np.asarray(Image.open(celeba[4]).convert("RGB"))[:, :, ::-1].astype(np.uint16) * 257
    cv2.imwrite(str(put("person_b/rgb16.png", "detected")), rgb16)
    Image.open(celeba[5]).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=96).save(
        put("person_b/palette.png", "detected"))
    put("person_b/notes.jpg", "failed: not an image", data=b"this is a text file with a .jpg name\n")
    put("person_b/readme.txt", "skipped: extension not in extensions", data=b"notes\n")
    (root / "person_b" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored
    # identity c: a photo without a detectable face (centre-cropped) and a 12000 x 12000 grayscale JPEG
    put("person_c/no_face.jpg", "fallback_center", celeba_dir / NO_FACE_PHOTO)
    big = Image.open(_lfw(lfw_dir, "Colin_Powell", 1)).convert("L").resize((12000, 12000), Image.Resampling.BILINEAR)
    big.save(put("person_c/huge.jpg", "detected"), quality=60)
    del big
    # a root-level file (like celeba-subset/identity_subset.txt) is not an identity: ignored
    (root / "identity_subset.txt").write_text("a1.jpg 1\n")
    return root, expected


@pytest.fixture(scope="module")
def prepared(mixed_input, tmp_path_factory):
    """The mixed input prepared once with two worker processes."""
    root, _ = mixed_input
    out = tmp_path_factory.mktemp("prepared") / "crops"
    summary = prepare_collection(root, out, workers=2, progress=False)
    return out, summary


def _manifest_lines(out: Path) -> list[list[str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.reader(handle))


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


def test_every_file_once_with_the_right_status(mixed_input, prepared):
    _, expected = mixed_input
    out, summary = prepared
    rows = read_manifest(out)
    lines = _manifest_lines(out)
    assert tuple(lines[0]) == MANIFEST_COLUMNS
    sources = [line[0] for line in lines[1:]]
    assert len(sources) == len(set(sources)) == len(expected)
    assert set(sources) == set(expected)
    for row in rows:
        assert row["status"].startswith(expected[row["source"]]), (row["source"], row["status"])
        assert row["identity"] == row["source"].split("/")[0]
        if row["status"] in ("detected", "fallback_center"):
            assert row["output"] == output_name(row["source"])
            crop = read_rgb(out / row["output"])
            assert crop.shape == (128, 128, 3)
        else:
            assert row["output"] == "" and not (out / output_name(row["source"])).exists()
        if row["status"] == "detected":
            assert len(parse_numbers(row["box"])) == 4 and len(parse_numbers(row["landmarks"])) == 10
            assert float(row["score"]) > 0.9
        else:
            assert row["box"] == row["landmarks"] == row["score"] == ""
    n_detected = sum(s == "detected" for s in expected.values())
    assert (summary.total, summary.detected, summary.fallback_center, summary.failed, summary.skipped) == (
        len(expected), n_detected, 1, 3, 1)
    assert summary.processed == len(expected) - 1 and summary.resumed == 0
    assert summary.ignored_root_files == 1
    assert summary.images_per_second > 0
    assert json.loads((out / "summary.json").read_text())["detected"] == n_detected
    # the huge photo was downscaled to fit max_pixels, but its box is in the file's own pixels: about
    # 48 x the box of the 250-pixel original it was made from
    huge = next(r for r in rows if r["source"] == "person_c/huge.jpg")
    box = parse_numbers(huge["box"])
    assert 0.4 < max(box[2] - box[0], box[3] - box[1]) / 12000 < 0.6 and box[2] < 12000 * 1.02
    # crop_path_map: usable rows only, absolute existing paths
    crops = crop_path_map(out)
    assert set(crops) == {s for s, v in expected.items() if v in ("detected", "fallback_center")}
    assert all(p.is_absolute() and p.is_file() for p in crops.values())
    assert crops["person_b/rgba.png"].name == "rgba.png.jpg"
    assert not list(out.rglob("*.tmp"))


def test_second_run_resumes_without_redoing_work(mixed_input, prepared):
    root, expected = mixed_input
    out, first = prepared
    before = (out / "manifest.csv").read_bytes()
    again = prepare_collection(root, out, workers=2, progress=False)
    assert again.processed == 0
    assert again.resumed == len(expected) - 1  # all but the skipped .txt
    assert (again.detected, again.failed, again.total) == (first.detected, first.failed, first.total)
    assert (out / "manifest.csv").read_bytes() == before


def test_killed_run_is_completed_without_duplicates(mixed_input, prepared):
    """A run killed mid-write leaves a cut-off line and a missing crop; the next run repairs both."""
    root, expected = mixed_input
    out, _ = prepared
    lines = (out / "manifest.csv").read_text().splitlines()
    kept = [line for line in lines if not line.startswith("person_a/a2.jpg")]
    (out / "manifest.csv").write_text("\n".join(kept) + "\nperson_a/a2.jpg,person_a,person_a/a2.j")
    (out / "person_b" / "b1.jpg").unlink()
    summary = prepare_collection(root, out, workers=1, progress=False)
    assert summary.processed == 2  # a2 (row lost) and b1 (crop lost), nothing else
    rows = read_manifest(out)
    sources = [line[0] for line in _manifest_lines(out)[1:]]
    assert len(sources) == len(set(sources)) == len(expected)
    assert {r["source"]: r["status"] for r in rows}["person_a/a2.jpg"] == "detected"
    assert (out / "person_b" / "b1.jpg").is_file()


def test_settings_that_shape_crops_cannot_change_in_one_folder(mixed_input, prepared):
    root, _ = mixed_input
    out, _ = prepared
    with pytest.raises(PrepareError, match="size=128"):
        prepare_collection(root, out, size=96, workers=1, progress=False)
    # the detector's explicit defaults (as conf/prepare.yaml spells them) are the same settings as None
    same = prepare_collection(root, out, workers=1, progress=False,
                              detector={"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7]})
    assert same.processed == 0
    with pytest.raises(PrepareError, match="min_face_size"):
        prepare_collection(root, out, workers=1, progress=False, detector={"min_face_size": 40})


def test_one_preparation_at_a_time_per_folder(mixed_input, prepared, monkeypatch, capsys):
    """A second run waits for the first (here: at most 1 s) and then fails with a clear message."""
    import stn_face.data.prepare as prepare_module

    fcntl = pytest.importorskip("fcntl")
    root, _ = mixed_input
    out, _ = prepared
    monkeypatch.setattr(prepare_module, "LOCK_TIMEOUT_S", 1.0)
    with open(out / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PrepareError, match="another preparation"):
            prepare_collection(root, out, workers=1, progress=False)
    assert "waiting for another preparation" in capsys.readouterr().err


def test_identity_filters(lfw_dir, tmp_path):
    people = {"Abel_Pacheco": 4, "Akhmed_Zakayev": 3, "Aaron_Peirsol": 4, "Aaron_Sorkin": 2}
    files = [f"{name}/{name}_{i:04d}.jpg" for name, n in people.items() for i in range(1, n + 1)]
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# people to leave out\n1\nAaron_Peirsol\t4\n")
    assert read_identity_list(exclude) == {"Aaron_Peirsol"}
    out = tmp_path / "out"
    summary = prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=1, progress=False,
                                 min_images_per_identity=3, max_images_per_identity=3,
                                 exclude_identities=exclude)
    status = {r["source"]: r["status"] for r in read_manifest(out)}
    assert len(status) == len(files) == summary.total == 13
    assert status["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"] == "skipped: excluded identity"
    assert status["Aaron_Sorkin/Aaron_Sorkin_0001.jpg"].startswith("skipped: identity has 2 < min_images")
    assert status["Abel_Pacheco/Abel_Pacheco_0004.jpg"] == "skipped: beyond max_images_per_identity=3"
    kept = sorted(s for s, v in status.items() if not v.startswith("skipped"))
    assert kept == [f"{n}/{n}_{i:04d}.jpg" for n in ("Abel_Pacheco", "Akhmed_Zakayev") for i in (1, 2, 3)]
    assert summary.processed == 6 and summary.skipped == 7
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Abel_Pacheco", "Akhmed_Zakayev"]

    # filters are re-applied on every run and win: excluding a prepared identity removes its crops
    again = prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=1, progress=False,
                               min_images_per_identity=3, max_images_per_identity=3,
                               exclude_identities=["Aaron_Peirsol", "Akhmed_Zakayev"])
    assert again.processed == 0 and again.skipped == 10
    assert not list((out / "Akhmed_Zakayev").glob("*.jpg"))
    assert set(crop_path_map(out)) == {f"Abel_Pacheco/Abel_Pacheco_{i:04d}.jpg" for i in (1, 2, 3)}


def test_bad_inputs_raise_clear_errors(tmp_path, lfw_dir):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_collection(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no identity folders"):
        prepare_collection(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(PrepareError, match="inside the input"):
        prepare_collection(lfw_dir, lfw_dir / "crops", progress=False)
    with pytest.raises(PrepareError, match="multiple of 112"):
        prepare_collection(lfw_dir, tmp_path / "out", mode="landmarks", size=100, progress=False)
    with pytest.raises(PrepareError, match="relative"):
        prepare_collection(lfw_dir, tmp_path / "out", files=["../x.jpg"], progress=False)


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
    summary = prepare_collection(lfw_dir / "lfw-deepfunneled", aligned, files=files, mode="landmarks", size=112,
                                 workers=1, progress=False)
    assert summary.detected == 3
    for source, path in crop_path_map(aligned).items():
        crop = read_rgb(path)
        assert crop.shape == (112, 112, 3)
        face = _redetect(crop, detector, pad=40)
        eyes = face.landmarks[:2] - 40
        assert np.abs(eyes - ARCFACE_EYES).max() < 4.0, (source, eyes)

    squares = tmp_path / "squares"
    prepare_collection(lfw_dir / "lfw-deepfunneled", squares, files=files, margin=1.3, size=128, workers=1,
                       progress=False)
    for source, path in crop_path_map(squares).items():
        crop = read_rgb(path)
        face = _redetect(crop, detector, pad=0)
        # the face box sits in the middle and its longer side is 1/1.3 of the crop
        assert np.allclose(face.center, (64, 64), atol=8), (source, face.box)
        assert 0.85 < max(face.width, face.height) * 1.3 / 128 < 1.15, (source, face.box)

    # no face: the centre square of fallback_fraction x the shorter side, in both modes
    fallback = tmp_path / "fallback"
    prepare_collection(celeba_dir, fallback, files=[NO_FACE_PHOTO], mode="landmarks", size=112,
                       fallback_fraction=0.5, workers=1, progress=False)
    row = read_manifest(fallback)[0]
    assert row["status"] == "fallback_center"
    photo = read_rgb(celeba_dir / NO_FACE_PHOTO)
    h, w = photo.shape[:2]
    side = round(0.5 * min(h, w))
    x0, y0 = round(w / 2 - side / 2), round(h / 2 - side / 2)
    expected = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(read_rgb(fallback / row["output"]).astype(int) - expected).mean() < 4  # JPEG noise only


class CrashingDetector:
    """Kills its worker process on a black image, like a decoder segfault would."""

    def __init__(self) -> None:
        self.inner = MTCNNDetector()

    def detect(self, image_rgb):
        if image_rgb.max() == 0:
            os._exit(1)
        return self.inner.detect(image_rgb)


def test_a_crashing_worker_fails_one_file_not_the_run(lfw_dir, tmp_path):
    raw = tmp_path / "raw"
    (raw / "p").mkdir(parents=True)
    for i in (1, 2, 3):
        shutil.copyfile(_lfw(lfw_dir, "Aaron_Peirsol", i), raw / "p" / f"{i}.jpg")
    cv2.imwrite(str(raw / "p" / "black.png"), np.zeros((60, 60, 3), np.uint8))
    summary = prepare_collection(raw, tmp_path / "out", workers=2, detector=CrashingDetector, progress=False)
    status = {r["source"]: r["status"] for r in read_manifest(tmp_path / "out")}
    assert status == {"p/1.jpg": "detected", "p/2.jpg": "detected", "p/3.jpg": "detected",
                      "p/black.png": "failed: worker process crashed on this file"}
    assert summary.processed == 4


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stn_face.prepare", *args], capture_output=True, text=True,
                          check=False, env=env, cwd=REPO_ROOT, timeout=120)


def test_cli_prepares_a_folder_and_reports_bad_input(lfw_dir, tmp_path):
    raw = tmp_path / "raw"
    for name in ("Aaron_Peirsol", "Abel_Pacheco"):
        (raw / name).mkdir(parents=True)
        shutil.copyfile(_lfw(lfw_dir, name, 1), raw / name / f"{name}_0001.jpg")
    out = tmp_path / "out"
    done = _cli(f"input={raw}", f"output={out}", "workers=1", "progress=false")
    assert done.returncode == 0, done.stderr
    assert "detected 2" in done.stdout
    assert [r["status"] for r in read_manifest(out)] == ["detected", "detected"]
    listed = tmp_path / "files.txt"
    listed.write_text("# one image only\nAbel_Pacheco/Abel_Pacheco_0001.jpg\n")
    only = _cli(f"input={raw}", f"output={tmp_path / 'only'}", f"files={listed}", "workers=1", "progress=false")
    assert only.returncode == 0, only.stderr
    assert [r["source"] for r in read_manifest(tmp_path / "only")] == ["Abel_Pacheco/Abel_Pacheco_0001.jpg"]

    missing = tmp_path / "does-not-exist"
    bad = _cli(f"input={missing}", f"output={out}")
    assert bad.returncode == 2
    assert str(missing) in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    nested = _cli(f"input={raw}", f"output={raw / 'crops'}")
    assert nested.returncode == 2 and "inside the input" in nested.stderr and "Traceback" not in nested.stderr
