"""benchmarks/gpu.py on the CPU: the dry run (every code path: Lightning beside the bare loop, FLOPs, the
JSON), the FLOP counter against the documented sizes, the peak table."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import common, gpu


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry-run", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["device"].startswith("cpu")
    assert result["precision"] == "bf16-mixed"  # conf/trainer/gpu.yaml's, on the CPU too
    (row,) = result["results"]
    assert row["error"] is None, row
    assert row["backbone"] == "tiny" and row["batch_size"] == 2 and row["compile"] is False
    assert row["channels_last"] is True and row["rounds"] == 1 and row["skipped_steps"] == 0
    for key in (
        "images_per_second",
        "bare_images_per_second",
        "framework_overhead_ratio",
        "forward_gmacs_per_image",
        "train_gflops_per_image",
        "achieved_tflops",
    ):
        assert _positive(row[key]), key
    assert row["framework_overhead_ratio"] == pytest.approx(
        row["images_per_second"] / row["bare_images_per_second"]
    )
    assert row["train_gflops_per_image"] == pytest.approx(6 * row["forward_gmacs_per_image"])
    assert row["mfu"] is None and row["peak_memory_gib"] is None  # no peak, no CUDA memory on a CPU
    assert result["targets"] == {}  # the targets are per paper/IResNet backbone, on an H100/H200


def test_gpu_flop_count_matches_the_documented_sizes():
    """Paper ResNet ~3.9 GMACs and IResNet-50 ~6.3 GMACs per 112x112 face (forward)."""
    for backbone, expected in (("paper_resnet", 3.9), ("iresnet50", 6.3)):
        model, _ = common.build_model(common.model_overrides(backbone, "identity"), num_classes=10)
        macs = gpu.count_macs(model, torch.randn(1, 3, 128, 128))
        assert macs["backbone"] / 1e9 == pytest.approx(expected, rel=0.05), backbone
        assert macs["transformer"] == 0 and macs["head"] == 10 * model.backbone.embedding_size


def test_gpu_peak_table():
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA L40S") == 362.0 and gpu.peak_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_tflops("NVIDIA A10G") is None and gpu.peak_tflops("Some Future GPU") is None


def test_targets_are_judged_on_the_best_configuration_of_each_backbone():
    rows = [
        {
            "backbone": "paper_resnet",
            "images_per_second": 9000.0,
            "framework_overhead_ratio": 0.99,
            "error": None,
        },
        {
            "backbone": "paper_resnet",
            "images_per_second": 11000.0,
            "framework_overhead_ratio": 0.96,
            "error": None,
        },
        {
            "backbone": "iresnet50",
            "images_per_second": 4000.0,
            "framework_overhead_ratio": 0.9,
            "error": None,
        },
        {"backbone": "iresnet50", "error": "skipped: 0 s of the 300 s budget left"},
    ]
    assert gpu.targets(rows, "NVIDIA H200") == {
        "images_per_second[paper_resnet]": True,
        "framework_overhead_ratio[paper_resnet]": True,
        "images_per_second[iresnet50]": False,
        "framework_overhead_ratio[iresnet50]": False,
    }
    assert set(gpu.targets(rows, "NVIDIA A100-SXM4-80GB").values()) == {None}


def test_no_cuda_without_dry_run_is_one_error_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu.main(["--no-save"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no CUDA device; run with --dry-run to check the code paths on the CPU"
    )
