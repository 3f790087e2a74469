"""stn-face-embed / stn-face-eval with a pretrained network alone (backbone=dlib_resnet, no checkpoint),
and a wrong backbone.weights file: one line, exit 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stn_face.cli import embed
from stn_face.cli import eval as evaluate_cli
from tests.helpers import CLI_ENV, compose_cli, expect_input_error, run_cli

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is not installed (pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@pytest.fixture(scope="module")
def dlib_chips(photos, models_dir, tmp_path_factory):
    """dlib's own 150x150 chips of 6 LFW photos (two people, three each) as JPEG-free PNG files, and
    dlib's descriptors of them."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    from stn_face.data.images import read_rgb

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    recogniser = dlib.face_recognition_model_v1(str(models_dir / "dlib_face_recognition_resnet_model_v1.dat"))
    root = tmp_path_factory.mktemp("dlib-chips")
    descriptors = {}
    for person in ("Aaron_Peirsol", "Abdullah_Gul"):
        (root / person).mkdir()
        for path in sorted((photos / person).glob("*.jpg"))[:3]:
            image = read_rgb(path)
            chip = dlib.get_face_chip(image, predictor(image, detector(image, 1)[0]), size=150, padding=0.25)
            name = f"{person}/{path.stem}.png"
            Image.fromarray(chip).save(root / name)
            descriptors[name] = np.asarray(recogniser.compute_face_descriptor(chip))
    return root, descriptors


def test_embed_with_dlib_resnet_equals_dlib(dlib_chips, tmp_path):
    root, descriptors = dlib_chips
    output = tmp_path / "dlib.npz"
    embed.main(compose_cli("embed", ["backbone=dlib_resnet", f"input={root}", f"output={output}", "cropped=true",
                                     "flip=false", "progress=false"]))
    with np.load(output) as data:
        names, embeddings = data["names"].tolist(), data["embeddings"]
    assert names == sorted(descriptors)
    expected = np.stack([descriptors[n] / np.linalg.norm(descriptors[n]) for n in names])
    assert embeddings.shape == (6, 128)
    assert np.abs(embeddings - expected).max() < 1e-4  # the .npz holds L2-normalised descriptors


def test_eval_with_dlib_resnet_and_no_checkpoint(data_dir, tmp_path):
    record = evaluate_cli.main(compose_cli("evaluate", [
        f"paths.output_dir={tmp_path}", "progress=false", "backbone=dlib_resnet", "eval=lfw",
        "eval.max_pairs_per_fold=3", "prepare_workers=1"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics is not None and record is not None
    text = json.dumps(record)
    assert "DlibResNet" in text and '"n_pairs": 60' in text.replace("\n", "")


def test_ckpt_and_backbone_together_is_an_input_error(capsys, tmp_path):
    cfg = compose_cli("embed", ["backbone=dlib_resnet", f"ckpt={tmp_path / 'x.ckpt'}", f"input={tmp_path}"])
    assert "not both" in expect_input_error(capsys, embed.main, cfg)


def test_wrong_weights_file_is_one_line_and_exit_2(models_dir, dlib_chips, tmp_path):
    root, _ = dlib_chips
    dat = models_dir / "dlib_face_recognition_resnet_model_v1.dat"
    result = run_cli(["stn_face.cli.embed", "backbone=iresnet50", f"backbone.weights={dat}", f"input={root}",
                      f"output={tmp_path / 'x.npz'}", "cropped=true", "progress=false"], env=CLI_ENV)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backbone.weights="), result.stderr
    assert str(dat) in lines[0] and "use backbone=dlib_resnet" in lines[0]


def test_a_backbone_without_weights_or_checkpoint_is_an_input_error(capsys, tmp_path):
    cfg = compose_cli("evaluate", [f"paths.output_dir={tmp_path}", "backbone=iresnet50", "eval=lfw"])
    assert "needs pretrained weights: pass backbone.weights=PATH" in expect_input_error(capsys, evaluate_cli.main, cfg)
