"""GPU training throughput and model FLOPs utilisation (MFU) of StnFaceModule, fitted by Lightning.

    python -m benchmarks.gpu                  # one GPU, < 5 minutes
    python -m benchmarks.gpu --dry-run        # CPU, tiny sizes: every code path, the numbers mean nothing

For the paper backbone and IResNet-50 at batch 256 (``--batch-sizes``): :class:`StnFaceModule`
(projective spatial transformer on 128x128 crops -> backbone at 112x112 -> ArcFace head over
``--num-classes`` identities -> SGD with the localization group and its gradient clipping) fitted by a
real ``lightning.Trainer`` with ``conf/trainer/gpu.yaml``'s precision (bf16-mixed; 16-mixed on cards
without bf16) and cuDNN benchmark setting, channels_last, ``torch.compile`` of the backbone off and on.
Beside it, the bare loop (``benchmarks/loops.py``: the module's own optimisation pieces without
Lightning) on the same model, interleaved round by round: ``framework_overhead_ratio`` = Lightning
images/s / bare images/s. Images are random tensors already on the GPU: this measures the model and
the framework, not the data pipeline.

FLOPs: multiply-accumulates counted with forward hooks on every Conv2d and Linear (localization net and
backbone) plus the head's embedding x class-centre product, x2 for FLOPs, x3 for forward + backward.
MFU = achieved FLOP/s / the card's dense bf16 peak (table below, by ``torch.cuda.get_device_name()``;
``--peak-tflops`` overrides). Writes ``<paths.log_dir>/bench/<date>-<host>-gpu.json`` or ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from benchmarks.common import (
    build_model,
    default_output,
    median,
    model_overrides,
    quiet,
    shrink_defaults,
    trainer_precision,
)
from benchmarks.loops import BareTrainer, CycledBatches, bare_run, lightning_run, no_sync

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
# issue 15's targets on an H100/H200: Lightning images/s per backbone at batch 256, and the overhead ratio
TARGET_CARDS = ("H100", "H200")
TARGET_IMAGES_PER_SECOND = {"paper_resnet": 10_000.0, "iresnet50": 5_000.0}
TARGET_OVERHEAD_RATIO = 0.95
DEFAULT_BACKBONES = "paper_resnet,iresnet50"


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


def compiled_graphs() -> int:
    """How many graphs ``torch.compile`` has made in this process so far (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def device_sync(device: torch.device):
    """The ``sync`` the loops call before reading a clock: CUDA kernels run asynchronously."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else no_sync


def run_config(
    backbone: str, batch: int, compile: bool, args, device: torch.device, precision: str
) -> dict[str, Any]:
    overrides = model_overrides(backbone, args.transform, channels_last=args.channels_last, compile=compile)
    overrides += ["head=arcface", "trainer=gpu"]
    torch.manual_seed(0)
    model, cfg = build_model(overrides, args.num_classes)
    size = int(cfg.data.image_size)
    macs = count_macs(model, torch.randn(1, 3, size, size))
    model = model.to(device)
    sync = device_sync(device)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    bare = BareTrainer(model, precision, scaler=scaler)
    batches = [
        (
            torch.randn(batch, 3, size, size, device=device),
            torch.randint(0, args.num_classes, (batch,), device=device),
        )
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):  # the compile and cuDNN's algorithm search happen here
        bare.step(*batches[0])
    sync()
    warmup_s = time.perf_counter() - start
    graphs_after_warmup = compiled_graphs()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    log_every, benchmark = int(cfg.trainer.log_every_n_steps), bool(cfg.trainer.benchmark)
    cycled = CycledBatches(batches, args.round_warmup + args.steps)
    per_round: list[dict[str, float]] = []
    for round_index in range(args.rounds):
        row: dict[str, float] = {}
        for which in ("lightning", "bare") if round_index % 2 == 0 else ("bare", "lightning"):
            if which == "lightning":
                wall, _, images = lightning_run(
                    model,
                    batches,
                    args.steps,
                    args.round_warmup,
                    precision,
                    log_every,
                    accelerator,
                    sync,
                    benchmark,
                )
            else:
                model.to(device)  # Lightning's teardown moved the model to the CPU
                wall, _, images = bare_run(bare, cycled, args.round_warmup, sync)
            row[which] = images / wall
        per_round.append(row)
    ips, bare_ips = median([r["lightning"] for r in per_round]), median([r["bare"] for r in per_round])
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
        "bare_images_per_second": bare_ips,
        "framework_overhead_ratio": median([r["lightning"] / r["bare"] for r in per_round]),
        "ratios": [r["lightning"] / r["bare"] for r in per_round],
        "rounds": len(per_round),
        "step_ms": 1000 * batch / ips,
        "bare_step_ms": 1000 * batch / bare_ips,
        "warmup_s": warmup_s,
        "forward_gmacs_per_image": macs["total"] / 1e9,
        "backbone_gmacs_per_image": macs["backbone"] / 1e9,
        "transformer_gmacs_per_image": macs["transformer"] / 1e9,
        "train_gflops_per_image": train_flops_per_image / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "bare_mfu": bare_ips * train_flops_per_image / 1e12 / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "skipped_steps": int(model.skipped_steps),
        # graphs compiled after the warm-up: > 0 means the Lightning loop made torch.compile recompile
        "recompiles_after_warmup": compiled_graphs() - graphs_after_warmup,
        "error": None,
    }
    del bare, model, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def targets(rows: list[dict[str, Any]], device_name: str) -> dict[str, bool | None]:
    """Issue 15's targets, judged on the best configuration of each backbone (None: not that card)."""
    judged = any(card in device_name for card in TARGET_CARDS)
    result: dict[str, bool | None] = {}
    for backbone, wanted in TARGET_IMAGES_PER_SECOND.items():
        done = [r for r in rows if r["backbone"] == backbone and not r.get("error")]
        if not done:
            continue
        best = max(done, key=lambda r: r["images_per_second"])
        result[f"images_per_second[{backbone}]"] = best["images_per_second"] >= wanted if judged else None
        result[f"framework_overhead_ratio[{backbone}]"] = (
            best["framework_overhead_ratio"] >= TARGET_OVERHEAD_RATIO if judged else None
        )
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="conf/backbone names")
    p.add_argument("--batch-sizes", default="256")
    p.add_argument("--compile", default="both", choices=["off", "on", "both"])
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--transform", default="projective")
    p.add_argument("--num-classes", type=int, default=10575, help="ArcFace classes (CASIA-WebFace: 10,575)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per loop per round")
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed bare-loop steps first (include the compile)"
    )
    p.add_argument("--round-warmup", type=int, default=3, help="untimed steps at the start of every loop")
    p.add_argument("--rounds", type=int, default=3, help="interleaved Lightning / bare-loop rounds")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the card's peak (dense bf16)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="skip configurations (compiled ones first) once this much time has passed",
    )
    p.add_argument(
        "--compile-reserve-s",
        type=float,
        default=90.0,
        help="start a compiled configuration only with this much budget left",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="on the CPU: tiny backbone, batch 2, 1 step a loop, compile off: the code paths only",
    )
    p.add_argument(
        "--out", default=None, help="JSON path (default <paths.log_dir>/bench/<date>-<host>-gpu.json)"
    )
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    if args.dry_run:  # tiny sizes for every option left at its default
        dry = {
            "backbones": "tiny",
            "batch_sizes": "2",
            "num_classes": 16,
            "steps": 1,
            "warmup": 1,
            "round_warmup": 1,
            "rounds": 1,
            "compile": "off",
        }
        shrink_defaults(args, p, dry)
    return args


def run(args: argparse.Namespace, save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every configuration of ``args``; the JSON-ready result, handed to ``save`` after each configuration
    too (a run stopped from outside keeps what it measured). Needs CUDA unless ``args.dry_run``."""
    quiet()
    started = time.perf_counter()
    precision = trainer_precision("auto", "gpu")
    if args.dry_run:
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            precision = "16-mixed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    # eager first (cheap), then compiled (a cold compile takes a minute or more)
    plan = [(b, n, c) for c in compiles for b in backbones for n in batches]
    rows: list[dict[str, Any]] = []
    result = {
        "schema": 2,
        "date": _dt.date.today().isoformat(),
        "host": socket.gethostname(),
        "device": name,
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "precision": precision,
        "settings": vars(args),
        "results": rows,
        "planned": len(plan),
        "targets": {},
        "wall_s": 0.0,
    }
    for backbone, batch, compiled in plan:
        head = {"backbone": backbone, "batch_size": batch, "compile": compiled}
        left = args.budget_s - (time.perf_counter() - started)
        if left <= 0 or (compiled and left < args.compile_reserve_s):
            rows.append(
                {**head, "error": f"skipped: {max(left, 0):.0f} s of the {args.budget_s:.0f} s budget left"}
            )
        else:
            try:
                rows.append(run_config(backbone, batch, compiled, args, device, precision))
            except Exception as err:  # noqa: BLE001 - an OOM or compile failure is a result to record
                text = str(err).strip().splitlines()
                rows.append({**head, "error": f"{type(err).__name__}: {text[0] if text else ''}"[:500]})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        print(row_text(rows[-1]), flush=True)
        result["targets"] = targets(rows, name)
        result["wall_s"] = time.perf_counter() - started
        if save is not None:
            save(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run to check the code paths on the CPU", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_output(_dt.date.today().isoformat(), "-gpu")

    def save(result: dict[str, Any]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    result = run(args, None if args.no_save else save)
    if not args.no_save:
        print(f"written {out}")
    print(f"{result['device']}: {len(result['results'])} configurations in {result['wall_s']:.0f} s")
    return 0


def row_text(row: dict[str, Any]) -> str:
    head = f"{row['backbone']:>13} batch {row['batch_size']:>4} compile {'on ' if row['compile'] else 'off'}"
    if row.get("error"):
        return f"{head}  {row['error']}"
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
    mem = f"{row['peak_memory_gib']:.1f} GiB" if row.get("peak_memory_gib") is not None else "-"
    return (
        f"{head}  Lightning {row['images_per_second']:8.1f} img/s (x{row['framework_overhead_ratio']:.3f} of "
        f"bare {row['bare_images_per_second']:.1f})  {row['achieved_tflops']:7.2f} TFLOPS  MFU {mfu}  "
        f"{row['forward_gmacs_per_image']:.2f} GMACs/img  warm-up {row['warmup_s']:.1f} s  peak {mem}"
    )


if __name__ == "__main__":
    sys.exit(main())
