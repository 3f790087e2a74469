"""Smoke tests of the benchmarks: every code path with tiny sizes; keys and sane numbers, no timing claims."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from stn_face import bench
from stn_face.paths import REPO_ROOT


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return bench.synthetic_crops(tmp_path_factory.mktemp("crops"), identities=4, per_identity=6)


@pytest.fixture(scope="module")
def quick_result(crops, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    assert bench.main(["--quick", "--lfw-root", str(crops), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_writes_every_figure(quick_result, crops):
    r = quick_result
    assert r["skipped"] == {}, r["skipped"]
    assert r["settings"]["quick"] is True and r["data"] == str(crops)
    for key in ("framework_overhead_ratio", "pipeline_ratio", "eval_images_per_second", "wall_s"):
        assert _positive(r[key]), key
    assert set(r["stn_step_share"]) == {"similarity", "affine", "projective"}
    assert all(0 < v < 1 for v in r["stn_step_share"].values())
    assert set(r["targets"]) == {
        "framework_overhead_ratio",
        "pipeline_ratio",
        "stn_step_share[similarity]",
        "stn_step_share[affine]",
        "stn_step_share[projective]",
    }
    o = r["overhead"]
    for key in (
        "lightning_images_per_second",
        "bare_images_per_second",
        "lightning_images_per_cpu_second",
        "bare_images_per_cpu_second",
        "framework_overhead_ratio_wall",
    ):
        assert _positive(o[key]), key
    assert o["skipped_steps"] == 0
    p = r["paper"]
    assert set(p["step_cpu_seconds_median"]) == {
        "identity",
        "similarity",
        "affine",
        "projective",
        "projective_loader",
    }
    assert all(_positive(v) for v in p["step_wall_seconds_median"].values())
    assert _positive(p["pipeline_ratio_wall"]) and _positive(p["loader_alone_images_per_second"])
    assert p["loader_worker_cpu_ms_per_image"] >= 0
    assert set(p["stn_step_share_diff"]) == {"similarity", "affine", "projective"}
    assert all(_positive(v) for v in p["transformer_fwd_bwd_cpu_seconds"].values())
    assert _positive(r["eval"]["model_only_images_per_second"]) and r["eval"]["mirror"] is True
    rows = {row["config"]: row for row in r["precision_layout"]}
    assert set(rows) == {"fp32", "bf16+cl"}
    for row in rows.values():
        assert row["error"] is None, row
        assert _positive(row["images_per_second"]) and _positive(row["peak_rss_mb"]) and row["steps"] >= 1
        assert _positive(row["warmup_s"]) and _positive(row["speedup_vs_fp32"])
    assert rows["bf16+cl"]["precision"] == "bf16-mixed" and rows["bf16+cl"]["channels_last"] is True
    assert rows["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    m = r["machine"]
    assert m["logical_cpus"] >= 1 and m["torch_threads"] == 1 and "avx512_bf16" in m["isa"]
    assert m["cpu_trainer_precision"] in ("32-true", "bf16-mixed")


def test_table_names_targets(quick_result):
    text = bench.table(quick_result)
    assert (
        "framework_overhead_ratio" in text and "pipeline_ratio" in text and "stn_step_share[affine]" in text
    )
    assert "train bf16+cl" in text


def test_default_output_path_is_dated_per_host(quick_result):
    args = bench.parse_args([])
    path = bench.output_path(args, quick_result)
    assert path.parent == REPO_ROOT / "benchmarks" / "results"
    assert path.name == f"{quick_result['date']}-{quick_result['machine']['host']}.json"


def test_precision_config_names():
    assert bench.parse_precision_config("bf16+cl+compile") == {
        "name": "bf16+cl+compile",
        "precision": "bf16-mixed",
        "channels_last": True,
        "compile": True,
    }
    with pytest.raises(ValueError):
        bench.parse_precision_config("fp16")


def test_a_broken_worker_is_reported_not_raised(crops, tmp_path):
    args = bench.parse_args(
        [
            "--quick",
            "--lfw-root",
            str(crops),
            "--precision-configs",
            "fp32",
            "--small-backbone",
            "no_such_backbone",
        ]
    )
    out = bench.bench_precision(args, crops, bench.Budget(5), tmp_path)
    (row,) = out["precision_layout"]
    assert row["error"] and "exited" in row["error"] and row["images_per_second"] is None


def test_bare_trainer_uses_the_module_parameter_groups():
    model, _ = bench.build_model(bench.model_overrides("tiny", "affine"), num_classes=3)
    trainer = bench.BareTrainer(model)
    main, localization = trainer.optimizer.param_groups
    assert localization["lr"] == pytest.approx(main["lr"] * model.localization_lr_mult)
    assert {id(p) for p in localization["params"]} == {id(p) for p in model.transformer.parameters()}
    before = [p.detach().clone() for p in model.transformer.parameters()]
    images, labels = torch.randn(4, 3, 128, 128), torch.tensor([0, 1, 2, 0])
    assert math.isfinite(float(trainer.step(images, labels)))
    trainer.step(images, labels)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.transformer.parameters()))


# -------------------------------------------------------------------------------------------- GPU script
def _gpu_module():
    spec = importlib.util.spec_from_file_location("stn_face_gpu_bench", REPO_ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_dry_run_on_cpu(tmp_path):
    gpu = _gpu_module()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry-run", "--backbones", "tiny", "--num-classes", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["device"].startswith("cpu")
    (row,) = result["results"]
    assert row["error"] is None, row
    assert row["batch_size"] == 2 and row["compile"] is False and row["channels_last"] is True
    for key in ("images_per_second", "forward_gmacs_per_image", "train_gflops_per_image", "achieved_tflops"):
        assert _positive(row[key]), key
    assert row["train_gflops_per_image"] == pytest.approx(6 * row["forward_gmacs_per_image"])
    assert row["mfu"] is None  # no peak for a CPU


def test_gpu_flop_count_matches_the_documented_sizes():
    """Paper ResNet ~3.9 GMACs and IResNet-50 ~6.3 GMACs per 112x112 face (forward)."""
    gpu = _gpu_module()
    for backbone, expected in (("paper_resnet", 3.9), ("iresnet50", 6.3)):
        model, _ = bench.build_model(bench.model_overrides(backbone, "identity"), num_classes=10)
        macs = gpu.count_macs(model, torch.randn(1, 3, 128, 128))
        assert macs["backbone"] / 1e9 == pytest.approx(expected, rel=0.05), backbone
        assert macs["transformer"] == 0 and macs["head"] == 10 * model.backbone.embedding_size


def test_gpu_peak_table():
    gpu = _gpu_module()
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA L40S") == 362.0 and gpu.peak_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_tflops("NVIDIA A10G") is None and gpu.peak_tflops("Some Future GPU") is None
