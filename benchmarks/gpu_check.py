"""``make gpu-check``: the whole GPU path on one GPU in under 8 minutes, with one JSON of everything.

    python -m benchmarks.gpu_check               # one GPU
    python -m benchmarks.gpu_check --dry-run     # the CPU, tiny sizes: every stage and code path

Stages, each in its own process (an OOM or a crash in one is recorded, the others still run), each with
its log in the run folder ``<paths.log_dir>/gpu-check/<date>_<time>/``:

1. ``training``: ``stn-face-train experiment=smoke trainer=gpu`` for ``--train-steps`` (300) steps on the
   smoke data (20 LFW DevTrain people), validated at the end; its loss curve from the CSV logger.
2. ``evaluation``: ``stn-face-eval`` of its ``last.ckpt`` on the LFW View 1 DevTest pairs, on the GPU.
3. ``export``: ``stn-face-export`` to ONNX (checked against PyTorch by the command), then run once more
   here with onnxruntime.
4. ``benchmark``: ``benchmarks/gpu.py``: StnFaceModule fitted by Lightning, paper ResNet and IResNet-50,
   batch 256, bf16 + channels_last, compile off and on: images/s and MFU, beside the bare loop for the
   framework-overhead ratio. It runs last and gets the time that is left, so the check ends within
   ``--max-minutes``.

``<run>/gpu-check.json`` (or ``--out``) holds every stage's command, exit code, wall time and results,
the targets and ``ok``; the exit code is 0 when every stage is ok, 1 otherwise. ``--dry-run`` runs the
same stages on the CPU (tiny backbone, batch 2, 4 training steps with ``trainer=gpu`` switched to the CPU
in fp32, 5 pairs per fold): what the CPU test suite runs so that none of it rots.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, compose
from stn_face.errors import InputError, friendly_errors
from stn_face.evaluation.artifacts import read_record

# seconds kept back from the benchmark for writing the JSON and for a configuration overrunning its start
BENCH_RESERVE_S = 45.0
# an exported model agrees with PyTorch to float32 rounding (measured ~1e-6); this is a broken export
EXPORT_TOLERANCE = 1e-3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="make gpu-check",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes: checks the code paths only")
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default 300; dry run 4)")
    p.add_argument("--max-minutes", type=float, default=None, help="whole check (default 8; dry run 20)")
    p.add_argument("--run-dir", default=None, help="default <paths.log_dir>/gpu-check/<date>_<time>")
    p.add_argument("--out", default=None, help="the JSON (default <run-dir>/gpu-check.json)")
    p.add_argument("--bench-args", default="", help="extra flags for benchmarks/gpu.py, one quoted string")
    args = p.parse_args(argv)
    if args.train_steps is None:
        args.train_steps = 4 if args.dry_run else 300
    if args.max_minutes is None:
        args.max_minutes = 20.0 if args.dry_run else 8.0
    return args


def console_script(name: str) -> str:
    """The installed ``stn-face-*`` command: beside this Python first (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise InputError(
            f"{name} not found beside {sys.executable} or on PATH: install the project first (make install)"
        )
    return found


def run_stage(name: str, command: list[str], run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``command`` with its output in ``<run_dir>/<name>.log``; exit code, wall time, error."""
    log = run_dir / f"{name}.log"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    env.setdefault("WANDB_MODE", "offline")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    stage: dict[str, Any] = {"command": shlex.join(command), "log": str(log), "error": None}
    start = time.perf_counter()
    with open(log, "w") as out:
        try:
            stage["returncode"] = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                timeout=max(1.0, timeout_s),
            ).returncode
        except subprocess.TimeoutExpired:
            stage["returncode"] = None
            stage["error"] = f"timed out after {timeout_s:.0f} s"
    stage["wall_s"] = round(time.perf_counter() - start, 1)
    if stage["returncode"] not in (0, None):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        stage["error"] = f"exit code {stage['returncode']}: {' | '.join(tail)}"[:800]
    return stage


def loss_curve(train_dir: Path) -> list[float]:
    """``train/loss`` at every logging step, from the CSV logger's ``metrics.csv``."""
    losses: list[float] = []
    for path in sorted(train_dir.rglob("metrics.csv")):
        with open(path, newline="") as handle:
            losses += [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    return losses


def training(args, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    train_dir = run_dir / "train"
    command = [
        console_script("stn-face-train"),
        "experiment=smoke",
        "trainer=gpu",
        "logger=csv",
        f"trainer.max_steps={args.train_steps}",
        f"trainer.val_check_interval={args.train_steps}",
        f"hydra.run.dir={train_dir}",
    ]
    if args.dry_run:  # the gpu trainer config, moved to the CPU
        command += [
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "trainer.benchmark=false",
            "trainer.log_every_n_steps=1",
            "eval.max_pairs_per_fold=5",
        ]
    stage = run_stage("training", command, run_dir, timeout_s)
    metrics = read_record(train_dir / "metrics.json", missing_ok=True)
    losses = loss_curve(train_dir)
    logged = metrics.get("train") or {}
    stage.update(
        {
            "steps": metrics.get("global_step", metrics.get("step")),
            "skipped_steps": metrics.get("skipped_steps"),
            "accuracy_mean": metrics.get("accuracy_mean"),
            "auc": metrics.get("auc"),
            "n_pairs": metrics.get("n_pairs"),
            "images_per_second": logged.get("train/images_per_second"),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "losses_logged": len(losses),
            "checkpoint": str(train_dir / "checkpoints" / "last.ckpt"),
        }
    )
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    # a few hundred steps must lower the loss; the dry run's 4 steps are still in the margin warm-up
    fell = finite and (args.dry_run or losses[-1] < losses[0])
    stage["ok"] = (
        stage["returncode"] == 0
        and stage["steps"] == args.train_steps
        and stage["skipped_steps"] == 0
        and fell
    )
    return stage


def evaluation(args, run_dir: Path, checkpoint: str, timeout_s: float) -> dict[str, Any]:
    eval_dir = run_dir / "eval"
    workers = 2 if args.dry_run else min(8, os.cpu_count() or 2)  # MTCNN crops of the pairs' images
    command = [
        console_script("stn-face-eval"),
        f"ckpt={checkpoint}",
        "eval=lfw_view1",
        "progress=false",
        f"device={'cpu' if args.dry_run else 'cuda'}",
        f"prepare_workers={workers}",
        f"hydra.run.dir={eval_dir}",
    ]
    if args.dry_run:
        command.append("eval.max_pairs_per_fold=5")
    stage = run_stage("evaluation", command, run_dir, timeout_s)
    metrics = read_record(eval_dir / "metrics.json", missing_ok=True)
    stage.update(
        {key: metrics.get(key) for key in ("eval", "n_pairs", "accuracy_mean", "accuracy_std", "auc")}
    )
    accuracy = stage["accuracy_mean"]
    stage["ok"] = (
        stage["returncode"] == 0 and bool(stage["n_pairs"]) and accuracy is not None and 0 <= accuracy <= 1
    )
    return stage


def export(args, run_dir: Path, checkpoint: str, timeout_s: float) -> dict[str, Any]:
    path = run_dir / "export" / "embedder.onnx"
    command = [console_script("stn-face-export"), f"ckpt={checkpoint}", "format=onnx", f"output={path}"]
    stage = run_stage("export", command, run_dir, timeout_s)
    found = re.search(
        r"max \|exported - PyTorch\| = ([0-9.eE+-]+)", Path(stage["log"]).read_text(errors="replace")
    )
    stage["check_max_abs_diff"] = float(found.group(1)) if found else None
    stage["onnx_file"] = str(path)
    stage["onnx_bytes"] = path.stat().st_size if path.is_file() else None
    stage["onnxruntime_output_shape"] = None
    if path.is_file():
        import numpy as np
        import onnxruntime as ort

        try:  # a batch of another size than the exporter's example: the batch dimension is dynamic
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            size = session.get_inputs()[0].shape[-1]
            images = np.random.default_rng(0).uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
            embeddings = session.run(None, {"images": images})[0]
            stage["onnxruntime_output_shape"] = list(embeddings.shape)
            stage["onnxruntime_finite"] = bool(np.isfinite(embeddings).all())
        except Exception as err:  # noqa: BLE001 - a broken export is a result to record
            stage["error"] = f"onnxruntime: {type(err).__name__}: {err}"[:800]
    diff = stage["check_max_abs_diff"]
    stage["ok"] = (
        stage["returncode"] == 0
        and diff is not None
        and diff < EXPORT_TOLERANCE
        and (stage["onnxruntime_output_shape"] or [0])[0] == 3
        and stage.get("onnxruntime_finite", False)
    )
    return stage


def benchmark(args, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    out = run_dir / "benchmark.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        "--out",
        str(out),
        "--budget-s",
        f"{max(0.0, timeout_s - BENCH_RESERVE_S):.0f}",
        *shlex.split(args.bench_args),
    ]
    if args.dry_run:
        command.append("--dry-run")
    stage = run_stage("benchmark", command, run_dir, timeout_s)
    result = json.loads(out.read_text()) if out.is_file() else {}  # the GPU benchmark's own file
    stage["result"] = result
    rows = result.get("results") or []
    stage["ok"] = stage["returncode"] == 0 and bool(rows) and not any(row.get("error") for row in rows)
    return stage


def check(args, out: Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    deadline = started + 60.0 * args.max_minutes
    stamp = _dt.datetime.now()
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else (Path(str(compose([]).paths.log_dir)) / "gpu-check" / stamp.strftime("%Y-%m-%d_%H-%M-%S"))
    )
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    def left(reserve: float = 0.0) -> float:
        return deadline - time.perf_counter() - reserve

    stages: dict[str, Any] = {}
    result: dict[str, Any] = {
        "schema": 1,
        "date": stamp.date().isoformat(),
        "host": socket.gethostname(),
        "device": None,
        "dry_run": args.dry_run,
        "run_dir": str(run_dir),
        "settings": vars(args),
        "stages": stages,
        "targets": {},
        "ok": False,
        "max_minutes": args.max_minutes,
    }
    total_s = 60.0 * args.max_minutes

    def checkpoint() -> str:
        return stages["training"]["checkpoint"]

    # the caps leave the benchmark most of the time; a stage that runs past its cap is recorded as failed
    plan = {
        "training": lambda: training(args, run_dir, min(left(0.6 * total_s), 0.3 * total_s)),
        "evaluation": lambda: evaluation(args, run_dir, checkpoint(), min(left(), 0.15 * total_s)),
        "export": lambda: export(args, run_dir, checkpoint(), min(left(), 0.1 * total_s)),
        "benchmark": lambda: benchmark(args, run_dir, left()),
    }
    for name, stage in plan.items():
        stages[name] = stage()
        bench = stages.get("benchmark", {}).get("result", {})
        result["device"], result["targets"] = bench.get("device"), bench.get("targets", {})
        result["ok"] = len(stages) == len(plan) and all(s["ok"] for s in stages.values())
        result["wall_s"] = round(time.perf_counter() - started, 1)
        write_json(
            out or run_dir / "gpu-check.json", result
        )  # after every stage: a stopped check keeps its past
    return result


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def summary(result: dict[str, Any]) -> str:
    s = result["stages"]
    t, e, x = s["training"], s["evaluation"], s["export"]
    lines = [
        f"gpu-check on {result['device']} ({result['host']}), {result['wall_s']:.0f} s"
        + ("  [--dry-run: the numbers mean nothing]" if result["dry_run"] else "")
    ]
    lines.append(
        f"  training   {'ok ' if t['ok'] else 'BAD'} {t['steps']} steps, loss {t['loss_first']} -> "
        f"{t['loss_last']}, {t['images_per_second']} img/s, {t['wall_s']} s  {t['error'] or ''}"
    )
    lines.append(
        f"  evaluation {'ok ' if e['ok'] else 'BAD'} {e['eval']}: {e['n_pairs']} pairs, accuracy "
        f"{e['accuracy_mean']}, AUC {e['auc']}, {e['wall_s']} s  {e['error'] or ''}"
    )
    lines.append(
        f"  export     {'ok ' if x['ok'] else 'BAD'} ONNX {x['onnx_bytes']} bytes, max |ONNX - PyTorch| "
        f"{x['check_max_abs_diff']}, {x['wall_s']} s  {x['error'] or ''}"
    )
    b = s["benchmark"]
    lines.append(f"  benchmark  {'ok ' if b['ok'] else 'BAD'} {b['wall_s']} s  {b['error'] or ''}")
    for row in b["result"].get("results", []):
        from benchmarks.gpu import row_text

        lines.append("    " + row_text(row))
    for key, met in result["targets"].items():
        lines.append(f"  target {key}: {'-' if met is None else ('met' if met else 'MISSED')}")
    lines.append(f"{'ok' if result['ok'] else 'NOT ok'}: {result['run_dir']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from stn_face.paths import data_root

    data_root(required=True)  # the smoke data: fail in a second, not after minutes of GPU time
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise InputError(
                "no CUDA device: make gpu-check needs one GPU; `make gpu-check ARGS=--dry-run` "
                "runs the same stages on the CPU"
            )
    result = check(args, Path(args.out) if args.out else None)
    print(summary(result))
    print(f"written {args.out or Path(result['run_dir']) / 'gpu-check.json'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
