"""stn-face-verify on real LFW photos, and the input errors of the use-a-model commands (embed, verify, visualize, export)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from stn_face.cli import embed
from tests.helpers import CLI_ENV, compose_cli, expect_input_error, run_cli

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.mark.slow
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


@pytest.mark.slow
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

