"""Section ``precision``: fp32 / bf16-mixed, channels_last and ``torch.compile`` of the small backbone in
the bare loop: throughput, warm-up and peak RSS, one subprocess per configuration (for a clean peak RSS),
driven through a pipe and interleaved round by round.

``python -m benchmarks.precision SPEC_JSON`` is one configuration's worker process.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    REPO_ROOT,
    Budget,
    build_model,
    clock,
    datamodule,
    median,
    model_overrides,
    preload,
    quiet,
    since,
)
from benchmarks.loops import BareTrainer
from stn_face.paths import cache_dir

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
DEFAULT_PRECISION_CONFIGS = "fp32,fp32+cl,bf16,bf16+cl,fp32+compile"


def parse_precision_config(name: str) -> dict[str, Any]:
    parts = name.split("+")
    if parts[0] not in PRECISIONS or any(p not in ("cl", "compile") for p in parts[1:]):
        raise ValueError(f"precision config {name!r}: write fp32 or bf16, optionally +cl and/or +compile")
    return {
        "name": name,
        "precision": PRECISIONS[parts[0]],
        "channels_last": "cl" in parts[1:],
        "compile": "compile" in parts[1:],
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size. ``VmHWM`` belongs to the process's own address space;
    ``getrusage`` maxrss would report at least the parent's RSS at fork, as Linux keeps it across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_main(spec_json: str) -> int:
    """A configuration's own process: reads commands from stdin, answers one JSON line each."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    quiet()
    spec = json.loads(spec_json)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    images, labels = torch.load(spec["batch_file"])
    config = parse_precision_config(spec["config"])
    model, _ = build_model(
        model_overrides(spec["backbone"], spec["transform"], config["channels_last"], config["compile"]),
        spec["num_classes"],
    )
    trainer = BareTrainer(model, config["precision"])

    def reply(**payload: Any) -> None:
        payload["max_rss_mb"] = peak_rss_mb()
        out.write(json.dumps(payload) + "\n")

    reply(ready=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            reply(bye=True)
            break
        try:
            walls, cpus = [], []
            for _ in range(int(command["steps"])):
                start = clock()
                trainer.step(images, labels)
                wall, cpu = since(start)
                walls.append(wall)
                cpus.append(cpu)
            reply(walls=walls, cpus=cpus)
        except Exception as err:  # noqa: BLE001 - reported to the parent (e.g. a compile failure)
            text = str(err).strip().splitlines()
            reply(error=f"{type(err).__name__}: {text[0] if text else ''}"[:500])
    return 0


class Worker:
    """One precision/layout configuration in its own Python process (clean peak RSS), driven by JSON lines."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], log_file: Path) -> None:
        self.log = open(log_file, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.precision", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            bufsize=1,
        )

    def ask(self, command: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            if command is not None:
                self.proc.stdin.write(json.dumps(command) + "\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError, ValueError):
            line = ""
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-3:]
            return {"error": f"worker exited with code {self.proc.returncode}: {' | '.join(tail)}"[:500]}
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # the worker's command loop ends at end of input
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def bench_precision(args, crops: Path, budget: Budget, tmp: Path) -> dict[str, Any]:
    configs = [parse_precision_config(c.strip()) for c in args.precision_configs.split(",") if c.strip()]
    dm = datamodule(crops, args.batch_precision, 0)
    images, labels = preload(dm.train_dataloader(), 1)[0]
    batch_file = tmp / "precision-batch.pt"
    torch.save((images, labels), batch_file)
    env = dict(os.environ)
    # the workers import this package by name, from wherever the parent was started
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # torch.compile's warm-up depends on inductor's on-disk cache: a persistent one under the stn_face
    # cache (warm after the first run), or with --cold-compile a fresh one (a first run on a new machine)
    inductor = tmp / "inductor-cache" if args.cold_compile else cache_dir() / "inductor"
    compile_cache = "cold" if not (inductor.is_dir() and any(inductor.iterdir())) else "warm"
    env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    results: dict[str, dict[str, Any]] = {}
    workers: dict[str, Worker] = {}
    try:
        for config in configs:
            spec = {
                "config": config["name"],
                "backbone": args.small_backbone,
                "transform": args.transform,
                "num_classes": dm.num_classes,
                "batch_file": str(batch_file),
                "threads": args.threads,
            }
            workers[config["name"]] = Worker(spec, env, tmp / f"worker-{config['name']}.log")
            results[config["name"]] = dict(config, walls=[], cpus=[], error=None)
        for name, worker in workers.items():  # all start (import, build) concurrently; not timed
            answer = worker.ask()
            results[name]["error"] = answer.get("error")
        # warm-up one configuration at a time (a compile warm-up is timed alone)
        for name, worker in workers.items():
            result = results[name]
            if result["error"]:
                continue
            if result["compile"] and budget.left() < args.compile_reserve_s:
                result["error"] = f"skipped: less than {args.compile_reserve_s:.0f} s of the time budget left"
                continue
            answer = worker.ask({"op": "run", "steps": args.warmup + (1 if result["compile"] else 0)})
            if "error" in answer:
                result["error"] = answer["error"]
                continue
            result["warmup_first_step_s"] = answer["walls"][0] if answer["walls"] else None
            result["warmup_s"] = sum(answer["walls"])
        live = [n for n in workers if not results[n]["error"]]
        for round_index in range(args.rounds):
            if round_index and budget.reserved(0.02):
                break
            shift = round_index % max(1, len(live))
            for name in live[shift:] + live[:shift]:
                if results[name]["error"]:
                    continue
                answer = workers[name].ask({"op": "run", "steps": args.precision_steps})
                if "error" in answer:
                    results[name]["error"] = answer["error"]
                else:
                    results[name]["walls"] += answer["walls"]
                    results[name]["cpus"] += answer["cpus"]
        for name, worker in workers.items():
            if worker.proc.poll() is None:
                results[name]["peak_rss_mb"] = worker.ask({"op": "quit"}).get("max_rss_mb")
    finally:
        for worker in workers.values():
            worker.close()
    baseline = results.get("fp32")
    base_wall = median(baseline["walls"]) if baseline and baseline["walls"] else None
    base_cpu = median(baseline["cpus"]) if baseline and baseline["cpus"] else None
    rows = []
    for name, r in results.items():
        wall = median(r["walls"]) if r["walls"] else None
        cpu = median(r["cpus"]) if r["cpus"] else None
        rows.append(
            {
                "config": name,
                "precision": r["precision"],
                "channels_last": r["channels_last"],
                "compile": r["compile"],
                "step_wall_seconds_median": wall,
                "step_cpu_seconds_median": cpu,
                "images_per_second": args.batch_precision / wall if wall else None,
                "images_per_cpu_second": args.batch_precision / cpu if cpu else None,
                "speedup_vs_fp32": base_cpu / cpu if (base_cpu and cpu) else None,
                "speedup_vs_fp32_wall": base_wall / wall if (base_wall and wall) else None,
                "warmup_first_step_s": r.get("warmup_first_step_s"),
                "warmup_s": r.get("warmup_s"),
                "peak_rss_mb": r.get("peak_rss_mb"),
                "steps": len(r["walls"]),
                "error": r["error"],
            }
        )
    return {
        "precision_layout": rows,
        "backbone": args.small_backbone,
        "transform": args.transform,
        "batch_size": args.batch_precision,
        "compile_cache": compile_cache,
    }


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
