"""GPU training throughput and model FLOPs utilisation (MFU) of stn_face's backbones.

    python benchmarks/gpu.py                      # one GPU, < 5 minutes
    python benchmarks/gpu.py --dry-run            # CPU, tiny batch: checks the code paths only

For the paper backbone and IResNet-50 at batch 128 and 256: the full training step of
``StnFaceModule`` (projective spatial transformer on 128x128 crops -> backbone at 112x112 -> ArcFace
head over ``--num-classes`` identities -> SGD with the localization group and its gradient clipping),
bf16 autocast + channels_last, ``torch.compile`` of the backbone off and on. Images are random tensors
already on the GPU: this measures the model, not the data pipeline.

FLOPs: multiply-accumulates counted with forward hooks on every Conv2d and Linear (localization net and
backbone) plus the head's embedding x class-centre product, x2 for FLOPs, x3 for forward + backward.
MFU = achieved FLOP/s / the card's dense bf16 peak (table below, by ``torch.cuda.get_device_name()``;
``--peak-tflops`` overrides). Writes ``benchmarks/results/<date>-<host>-gpu.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from torch import nn

# Dense (no sparsity) bf16 tensor-core peak, TFLOPS, from the vendors' data sheets; fp16 for cards
# without bf16. Checked in this order: the first key that occurs in the device name wins.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),  # A10 (not A10G)
    ("V100", 125.0),  # fp16
    ("T4", 65.0),  # fp16
]


def peak_tflops(device_name: str) -> float | None:
    if "A10G" in device_name:  # AWS's A10G: clocks differ from the A10 data sheet
        return None
    for key, value in PEAK_TFLOPS:
        if key in device_name:
            return value
    return None


def count_macs(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Forward multiply-accumulates per image of ``model.transformer`` -> ``model.backbone`` -> head, counted
    with hooks on Conv2d and Linear (the head's cosine product is added from its weight's shape)."""
    totals = {"transformer": 0.0, "backbone": 0.0}

    def hook_for(part: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                per_output = (
                    module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                )
                totals[part] += output.numel() * per_output
            elif isinstance(module, nn.Linear):
                totals[part] += output.numel() * module.in_features

        return hook

    handles = []
    for part in ("transformer", "backbone"):
        for module in getattr(model, part).modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                handles.append(module.register_forward_hook(hook_for(part)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            aligned, _ = model.transformer(images)
            model.backbone(aligned)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    batch = images.shape[0]
    result = {k: v / batch for k, v in totals.items()}
    result["head"] = float(model.head.weight.numel())  # embedding_size x num_classes per image
    result["total"] = result["transformer"] + result["backbone"] + result["head"]
    return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(
    backbone: str, batch: int, compile: bool, args, device: torch.device, precision: str
) -> dict[str, Any]:
    from stn_face.bench import BareTrainer, build_model, model_overrides

    overrides = model_overrides(backbone, args.transform, channels_last=args.channels_last, compile=compile)
    overrides += ["head=arcface"]
    torch.manual_seed(0)
    model, _ = build_model(overrides, args.num_classes)
    macs = count_macs(model, torch.randn(1, 3, 128, 128))
    model = model.to(device)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    trainer = BareTrainer(model, precision, scaler=scaler)
    images = torch.randn(batch, 3, 128, 128, device=device)
    labels = torch.randint(0, args.num_classes, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        trainer.step(images, labels)
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step(images, labels)
    sync(device)
    seconds = time.perf_counter() - start
    ips = batch * args.steps / seconds
    train_flops_per_image = 3 * 2 * macs["total"]
    achieved = ips * train_flops_per_image / 1e12
    peak = args.peak_tflops or (
        peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    row = {
        "backbone": backbone,
        "batch_size": batch,
        "compile": compile,
        "channels_last": args.channels_last,
        "precision": precision,
        "images_per_second": ips,
        "step_ms": 1000 * seconds / args.steps,
        "warmup_s": warmup_s,
        "forward_gmacs_per_image": macs["total"] / 1e9,
        "backbone_gmacs_per_image": macs["backbone"] / 1e9,
        "transformer_gmacs_per_image": macs["transformer"] / 1e9,
        "train_gflops_per_image": train_flops_per_image / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "error": None,
    }
    del trainer, model, images, labels
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--backbones", default="paper_resnet,iresnet50", help="conf/backbone names")
    p.add_argument("--batch-sizes", default="128,256")
    p.add_argument("--compile", default="both", choices=["off", "on", "both"])
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--transform", default="projective")
    p.add_argument("--num-classes", type=int, default=10575, help="ArcFace classes (CASIA-WebFace: 10,575)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (include the compile)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the card's peak (dense bf16)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=270.0,
        help="skip configurations (compiled ones first) once this much time has passed",
    )
    p.add_argument(
        "--compile-reserve-s",
        type=float,
        default=75.0,
        help="start a compiled configuration only with this much budget left",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="on the CPU, batch 2, 1+1 steps, compile off, fp32: runs the code paths, numbers mean nothing",
    )
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/<date>-<host>-gpu.json)"
    )
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    if args.dry_run:
        if args.batch_sizes == "128,256":
            args.batch_sizes = "2"
        args.steps, args.warmup = 1, 1
        if args.compile == "both":
            args.compile = "off"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from stn_face.bench import _quiet

    _quiet()
    started = time.perf_counter()
    if args.dry_run:
        device = torch.device("cpu")
        precision = "32-true"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run to check the CPU-side code paths", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    # eager first (cheap), then compiled (a cold compile takes a minute or more)
    plan = [(b, n, c) for c in compiles for b in backbones for n in batches]
    rows = []
    for backbone, batch, compiled in plan:
        left = args.budget_s - (time.perf_counter() - started)
        if left <= 0 or (compiled and left < args.compile_reserve_s):
            rows.append(
                {
                    "backbone": backbone,
                    "batch_size": batch,
                    "compile": compiled,
                    "error": f"skipped: {max(left, 0):.0f} s of the {args.budget_s:.0f} s budget left",
                }
            )
            continue
        try:
            rows.append(run_config(backbone, batch, compiled, args, device, precision))
        except Exception as err:  # noqa: BLE001 - an OOM or compile failure is a result to record
            text = str(err).strip().splitlines()
            rows.append(
                {
                    "backbone": backbone,
                    "batch_size": batch,
                    "compile": compiled,
                    "error": f"{type(err).__name__}: {text[0] if text else ''}"[:500],
                }
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(_row_text(rows[-1]), flush=True)
    result = {
        "schema": 1,
        "date": _dt.date.today().isoformat(),
        "host": socket.gethostname(),
        "device": name,
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "precision": precision,
        "settings": vars(args),
        "results": rows,
        "wall_s": time.perf_counter() - started,
    }
    if not args.no_save:
        host = "".join(c if c.isalnum() or c in "-_." else "-" for c in result["host"])
        out = (
            Path(args.out)
            if args.out
            else (Path(__file__).resolve().parent / "results" / f"{result['date']}-{host}-gpu.json")
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {out}")
    print(f"{name}: {len(rows)} configurations in {result['wall_s']:.0f} s")
    return 0


def _row_text(row: dict[str, Any]) -> str:
    head = f"{row['backbone']:>13} batch {row['batch_size']:>4} compile {'on ' if row['compile'] else 'off'}"
    if row.get("error"):
        return f"{head}  {row['error']}"
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
    mem = f"{row['peak_memory_gib']:.1f} GiB" if row.get("peak_memory_gib") is not None else "-"
    return (
        f"{head}  {row['images_per_second']:8.1f} img/s  {row['achieved_tflops']:7.2f} TFLOPS  MFU {mfu}  "
        f"{row['forward_gmacs_per_image']:.2f} GMACs/img  warm-up {row['warmup_s']:.1f} s  peak {mem}"
    )


if __name__ == "__main__":
    sys.exit(main())
