"""``make gpu-check --dry-run``: every stage of the GPU acceptance check (training with trainer=gpu, an
evaluation, an ONNX export, the Lightning-vs-bare benchmark) on the CPU with tiny sizes, on real data."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from stn_face.paths import REPO_ROOT


@pytest.mark.slow
def test_dry_run_runs_every_stage(lfw_dir, tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--run-dir", str(tmp_path / "run"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] is True and result["dry_run"] is True and result["device"] == "cpu (dry run)"
    stages = result["stages"]
    assert list(stages) == ["training", "evaluation", "export", "benchmark"]
    for name, stage in stages.items():
        assert stage["ok"] and stage["returncode"] == 0 and stage["error"] is None, (name, stage)
        assert stage["wall_s"] > 0 and (tmp_path / "run" / f"{name}.log").is_file()
    train = stages["training"]
    assert "trainer=gpu" in train["command"] and train["steps"] == 4 and train["skipped_steps"] == 0
    assert (
        train["losses_logged"] == 4
        and math.isfinite(train["loss_first"])
        and math.isfinite(train["loss_last"])
    )
    assert (tmp_path / "run" / "train" / "checkpoints" / "last.ckpt").is_file()
    evaluation = stages["evaluation"]
    assert evaluation["eval"] == "lfw_view1" and evaluation["n_pairs"] == 10
    assert 0 <= evaluation["accuracy_mean"] <= 1 and 0 <= evaluation["auc"] <= 1
    export = stages["export"]
    embedding_size = torch.load(train["checkpoint"], map_location="cpu", weights_only=False)["model_config"][
        "backbone"
    ]["embedding_size"]
    assert export["onnxruntime_output_shape"] == [3, embedding_size] and export["onnxruntime_finite"]
    assert export["check_max_abs_diff"] < 1e-3 and export["onnx_bytes"] > 0
    (row,) = stages["benchmark"]["result"]["results"]
    assert row["error"] is None and row["backbone"] == "tiny" and row["framework_overhead_ratio"] > 0


@pytest.mark.slow  # a subprocess: imports torch and composes the configs
def test_without_a_gpu_it_says_how_to_run_the_dry_run(lfw_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no CUDA device: make gpu-check needs one GPU; "
        "`make gpu-check ARGS=--dry-run` runs the same stages on the CPU"
    )
