"""The "use a trained model" commands on real LFW photos: embed, verify, visualize, and their input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stn_face.cli import embed
from tests.helpers import run_cli
from tests.use_helpers import CLI_ENV, compose_cli, expect_input_error

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def photos(lfw_dir):
    return lfw_dir / "lfw-deepfunneled"


def test_verify_prints_score_and_decision_and_saves_aligned_faces(checkpoints, photos, tmp_path):
    a, b = photos / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", photos / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    result = run_cli(["stn_face.cli.verify", f"ckpt={checkpoints['projective']}", f"a={a}", f"b={b}",
                      f"save_aligned={tmp_path}"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    score = float(lines["score"].split()[0])
    assert -1.0 <= score <= 1.0
    assert lines["threshold"].startswith("0.2500")  # the calibrated LFW threshold in the checkpoint
    assert lines["decision"].split()[0] == ("same" if score >= 0.25 else "different")
    saved = sorted(tmp_path.glob("*_aligned.png"))
    assert [p.name for p in saved] == ["a_Aaron_Peirsol_0001_aligned.png", "b_Abel_Pacheco_0001_aligned.png"]
    assert Image.open(saved[0]).size == (112, 112)


def test_visualize_writes_a_grid_png(checkpoints, photos, tmp_path):
    output = tmp_path / "grid.png"
    result = run_cli(["stn_face.cli.visualize", f"ckpt={checkpoints['affine']}", f"input={photos / 'Aaron_Peirsol'}",
                      f"output={output}", "max_images=3", "columns=2", "tile=112"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    image = np.asarray(Image.open(output).convert("RGB"))
    # 2 rows x 2 cells of (input | aligned), each cell 2 tiles wide plus a caption strip
    assert image.shape[0] > 2 * 112 and image.shape[1] > 4 * 112
    green = (image[..., 1] > 200) & (image[..., 0] < 80) & (image[..., 2] < 80)
    assert green.sum() > 200  # the sampling quadrilaterals are drawn


def test_embed_raw_photos_with_failures_and_root_level_files(checkpoints, photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "Aaron_Peirsol").mkdir(parents=True)
    for name in ("Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg"):
        (folder / "Aaron_Peirsol" / name).symlink_to(photos / "Aaron_Peirsol" / name)
    (folder / "loose.jpg").symlink_to(photos / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    (folder / "Aaron_Peirsol" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a whole jpeg")
    output = tmp_path / "out.npz"
    cfg = compose_cli("embed", [f"ckpt={checkpoints['similarity']}", f"input={folder}", f"output={output}",
                                f"cache_dir={tmp_path / 'cache'}", "workers=1", "progress=false"])
    embed.main(cfg)
    captured = capsys.readouterr()
    assert "warning: 1 of 4 images skipped" in captured.err and "Aaron_Peirsol/broken.jpg" in captured.err
    with np.load(output) as data:
        names, embeddings = data["names"].tolist(), data["embeddings"]
        assert data["failed"].tolist() == ["Aaron_Peirsol/broken.jpg"]
    assert names == ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "loose.jpg"]
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # the crops are the training crops: same as the cached LFW preparation of the same photo
    from stn_face.data.prepare import crop_path_map, prepare_collection
    from stn_face.embedder import FaceEmbedder
    from stn_face.paths import cache_dir

    reference_dir = cache_dir() / "prepared" / "lfw-crop128"  # cached; prepared here on a fresh checkout
    prepare_collection(photos, reference_dir, files=["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"], workers=1,
                       progress=False, replace_stale=True)
    prepared = crop_path_map(reference_dir)["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"]
    reference = FaceEmbedder.from_checkpoint(checkpoints["similarity"]).embed_files([prepared], progress=False)
    assert float(reference[0] @ embeddings[0]) > 0.9999


def test_input_errors_exit_2_with_one_message(checkpoints, photos, tmp_path, capsys):
    # in the real command: a checkpoint of another architecture (similarity weights, affine config)
    ckpt = torch.load(checkpoints["similarity"], map_location="cpu", weights_only=True)
    ckpt["model_config"] = torch.load(checkpoints["affine"], map_location="cpu", weights_only=True)["model_config"]
    torch.save(ckpt, tmp_path / "mixed.ckpt")
    image = photos / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    result = run_cli(["stn_face.cli.verify", f"ckpt={tmp_path / 'mixed.ckpt'}", f"a={image}", f"b={image}"], env=CLI_ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "another architecture" in result.stderr and result.stderr.strip().startswith("error:")
    # the others in process, through the same friendly_errors wrapper
    from stn_face.cli import export, verify, visualize

    message = expect_input_error(capsys, embed.main, compose_cli(
        "embed", [f"ckpt={tmp_path / 'missing.ckpt'}", f"input={photos}", f"output={tmp_path / 'x.npz'}"]))
    assert message.startswith("error: checkpoint not found")

    message = expect_input_error(capsys, verify.main, compose_cli(
        "verify", [f"ckpt={checkpoints['identity']}", f"a={tmp_path / 'nobody.jpg'}", f"b={image}"]))
    assert "a=" in message and "image not found" in message
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a")
    message = expect_input_error(capsys, verify.main, compose_cli(
        "verify", [f"ckpt={checkpoints['identity']}", f"a={image}", f"b={broken}", "cropped=true"]))
    assert "b=" in message
    message = expect_input_error(capsys, visualize.main, compose_cli(
        "visualize", [f"ckpt={checkpoints['identity']}", f"input={tmp_path / 'nowhere'}"]))
    assert "input not found" in message
    message = expect_input_error(capsys, export.main, compose_cli("export", [f"ckpt={broken}"]))
    assert "not a PyTorch checkpoint" in message
    message = expect_input_error(capsys, embed.main, compose_cli(
        "embed", [f"ckpt={checkpoints['identity']}", f"input={image}", f"output={tmp_path / 'y.npz'}"]))
    assert "is not a folder" in message
