"""The CPU benchmark suite (benchmarks/cpu.py): every code path with tiny sizes on real LFW crops; keys and
sane numbers, no timing claims. The bare loop is checked to train exactly as Lightning does."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import common, cpu, loops, precision
from stn_face.cli import bench as bench_cli
from stn_face.paths import REPO_ROOT


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_result(crops, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    assert cpu.main(["--quick", "--lfw-root", str(crops), "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quick_run_writes_every_figure(quick_result, crops):
    r = quick_result
    assert r["skipped"] == {}, r["skipped"]
    assert r["settings"]["quick"] is True and r["data"] == str(crops)
    for key in ("framework_overhead_ratio", "pipeline_ratio", "eval_images_per_second", "wall_s"):
        assert _positive(r[key]), key
    assert set(r["stn_step_share"]) == {"similarity", "affine", "projective", "tps"}
    assert all(0 < v < 1 for v in r["stn_step_share"].values())
    assert set(r["targets"]) == {
        "framework_overhead_ratio",
        "pipeline_ratio",
        "stn_step_share[similarity]",
        "stn_step_share[affine]",
        "stn_step_share[projective]",
        "stn_step_share[tps]",
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
        "tps",
        "projective_loader",
    }
    assert all(_positive(v) for v in p["step_wall_seconds_median"].values())
    assert _positive(p["pipeline_ratio_wall"]) and _positive(p["loader_alone_images_per_second"])
    assert p["loader_worker_cpu_ms_per_image"] >= 0
    assert set(p["stn_step_share_diff"]) == {"similarity", "affine", "projective", "tps"}
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
    mfu = r["mfu"]
    peak = mfu["peak"]
    assert peak["gflops"] == pytest.approx(peak["cores"] * peak["fma_units"] * peak["fp32_lanes"] * 2 * peak["mhz"] / 1000)
    assert peak["fp32_lanes"] in (4, 8, 16) and peak["mhz"] > 0 and "GFLOP/s" in peak["derivation"]
    assert 0 < mfu["gemm_mfu"] < 1.5 and 0 < mfu["conv_mfu"] < 1.5
    tiny = mfu["backbones"]["tiny"]
    for part in ("train", "forward", "eval_pipeline", "eval_pipeline_from_files"):
        row = tiny[part]
        assert _positive(row["images_per_second"]) and 0 < row["mfu"] < 1, (part, row)
        assert row["gflops"] == pytest.approx(row["images_per_second"] * row["gflop_per_image"])
    # a training step costs more than a forward pass; a crop in the pipeline is two forward passes
    assert tiny["train"]["gflop_per_image"] > 2 * tiny["forward"]["gflop_per_image"]
    assert tiny["eval_pipeline"]["gflop_per_image"] == pytest.approx(2 * tiny["forward"]["gflop_per_image"])
    # the main job's step: old settings against today's defaults (--quick: tiny backbone, eager)
    job = mfu["main_job"]
    assert job["batch_size"] == 2 and job["classes"] == 1184
    for name in ("old", "new", "new_eager"):
        assert _positive(job[name]["images_per_second"]) and 0 < job[name]["mfu"] < 1, (name, job[name])
    assert job["old"]["localization"] == [32, 64, 128] and job["new"]["localization"] == [16, 32, 64]
    assert job["old"]["gflop_per_image"] > job["new"]["gflop_per_image"]  # the half-width localization net
    assert job["mfu_ratio"] == pytest.approx(job["new"]["mfu"] / job["old"]["mfu"])
    rounds = [n * job["new"]["gflop_per_image"] / (o * job["old"]["gflop_per_image"]) for n, o in
              zip(job["new"]["rounds_images_per_second"], job["old"]["rounds_images_per_second"])]
    assert job["rounds_mfu_ratio"] == pytest.approx(rounds) and min(rounds) <= job["mfu_ratio_paired"] <= max(rounds)
    # the evaluation pipelines (pixel pack, files) against the forward pass: the median of rounds run back
    # to back, and the share of their time inside the network
    for part in ("eval_pipeline", "eval_pipeline_from_files"):
        pipeline = tiny[part]
        assert len(pipeline["rounds_vs_forward"]) >= 1 and all(_positive(x) for x in pipeline["rounds_vs_forward"])
        assert min(pipeline["rounds_vs_forward"]) <= pipeline["vs_forward"] <= max(pipeline["rounds_vs_forward"])
        assert _positive(pipeline["vs_forward_at_batch"]) and 0 < pipeline["in_network"] < 1
    assert _positive(tiny["forward_pipeline_batch_images_per_second"])
    assert _positive(tiny["eval_pipeline"]["pack_write_seconds"])
    # the real LFW View 2 evaluation (--quick: one same and one different pair a fold): the same accuracy from
    # the files, into a new pixel pack and from it
    view2 = r["lfw_view2"]["backbones"]["tiny"]
    runs = [view2[run] for run in ("files", "pack_cold", "pack_warm")]
    assert all(run["pairs"] == 20 and run["crops"] >= 20 and _positive(run["seconds"]) for run in runs)
    assert all(0 < run["in_network"] < 1 and len(run["rounds_seconds"]) == 1 for run in runs)
    assert runs[0]["accuracy"] == runs[1]["accuracy"] == runs[2]["accuracy"] and len(view2["accuracies"]) == 1
    assert view2["warm_vs_files"] == pytest.approx(runs[0]["seconds"] / runs[2]["seconds"])
    m = r["machine"]
    assert m["logical_cpus"] >= 1 and m["torch_threads"] == 1 and "avx512_bf16" in m["isa"]
    assert m["cpu_trainer_precision"] in ("32-true", "bf16-mixed")


@pytest.mark.slow
def test_table_names_targets(quick_result):
    text = cpu.table(quick_result)
    assert (
        "framework_overhead_ratio" in text and "pipeline_ratio" in text and "stn_step_share[affine]" in text
    )
    assert "train bf16+cl" in text
    assert "MFU (model FLOPs utilisation)" in text and "ceilings measured: GEMM" in text


def test_default_output_is_a_dated_run_file_outside_the_source_tree():
    args = cpu.parse_args([])
    result = {"date": "2026-11-28"}
    path = cpu.output_path(args, result)
    # <paths.log_dir>/bench/ (logs/bench relative to where the command runs), never benchmarks/ or stn_face/
    assert path.parent == Path(str(common.compose([]).paths.log_dir)) / "bench"
    assert path.name == f"2026-11-28-{common.safe_host()}.json"
    assert not path.resolve().is_relative_to(REPO_ROOT / "benchmarks")
    assert not path.resolve().is_relative_to(REPO_ROOT / "stn_face")
    assert cpu.output_path(cpu.parse_args(["--out-dir", "/tmp/b"]), result) == Path("/tmp/b") / path.name
    assert cpu.output_path(cpu.parse_args(["--out", "/tmp/x.json"]), result) == Path("/tmp/x.json")


def test_unknown_section_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["--sections", "overhead,warp"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --sections: unknown warp; choose from mfu, lfw_view2, overhead, stn, pipeline, eval, precision, head_memory, "
        "recordio"
    )


def test_console_script_from_an_installed_wheel_says_where_benchmarks_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench_cli, "REPO_ROOT", tmp_path)  # a wheel install: no benchmarks/ beside stn_face
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["--quick"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: stn-face-bench runs from a source checkout") and "make bench" in line


def test_precision_config_names():
    assert precision.parse_precision_config("bf16+cl+compile") == {
        "name": "bf16+cl+compile",
        "precision": "bf16-mixed",
        "channels_last": True,
        "compile": True,
    }
    with pytest.raises(ValueError):
        precision.parse_precision_config("fp16")


@pytest.mark.slow
def test_a_broken_worker_is_reported_not_raised(crops, tmp_path):
    args = cpu.parse_args(
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
    out = precision.bench_precision(args, crops, common.Budget(5), tmp_path)
    (row,) = out["precision_layout"]
    assert row["error"] and "exited" in row["error"] and row["images_per_second"] is None


def test_the_data_settings_come_from_conf_data(crops):
    dm = common.datamodule(crops, batch_size=4, num_workers=0)
    data = common.compose(["data=folder", f"data.root={crops}"]).data
    assert dm.num_classes == 10 and len(dm.train_set) == 60
    assert dm.image_size == data.image_size and dm.augment == dict(data.augment)
    assert dm.min_images_per_identity == data.min_images_per_identity and dm.batch_size == 4


def test_bare_trainer_uses_the_module_parameter_groups():
    model, _ = common.build_model(common.model_overrides("tiny", "affine"), num_classes=3)
    trainer = loops.BareTrainer(model)
    main, localization = trainer.optimizer.param_groups
    assert localization["lr"] == pytest.approx(main["lr"] * model.localization_lr_mult)
    assert {id(p) for p in localization["params"]} == {id(p) for p in model.transformer.parameters()}
    assert [id(p) for p in main["params"]] == [id(p) for p in model.parameter_groups()[0]["params"]]
    before = [p.detach().clone() for p in model.transformer.parameters()]
    images, labels = torch.randn(4, 3, 128, 128), torch.tensor([0, 1, 2, 0])
    assert math.isfinite(float(trainer.step(images, labels)))
    trainer.step(images, labels)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.transformer.parameters()))


@pytest.mark.slow
def test_bare_loop_trains_exactly_as_lightning(crops):
    """Same model, batches and seed: 5 steps of the bare loop and of a real Trainer give the same weights.
    The margin warm-up and ramp, the localization group's rate, its clipping and the schedule all act."""
    dm = common.datamodule(crops, batch_size=8, num_workers=0)
    batches = common.preload(dm.train_dataloader(), 2)
    overrides = [
        *common.model_overrides("tiny", "projective"),
        "model.margin_warmup_steps=1",
        "model.margin_ramp_steps=3",
        "model.localization_grad_clip=0.01",
        "scheduler.warmup_steps=2",
    ]
    torch.manual_seed(0)
    model, _ = common.build_model(overrides, dm.num_classes)
    twin = copy.deepcopy(model)
    assert [model.margin_factor(s) for s in range(5)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    loops.lightning_run(model, batches, steps=4, warmup=1, precision="32-true", log_every_n_steps=1)
    bare = loops.BareTrainer(twin)
    wall, cpu_s, images = loops.bare_run(bare, loops.CycledBatches(batches, 5), warmup=1)
    assert images == 4 * 8 and wall > 0 and cpu_s > 0 and bare.step_count == 5
    assert bare.scheduler.get_last_lr() == pytest.approx(
        [g["lr"] for g in model.trainer.optimizers[0].param_groups]
    )
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
