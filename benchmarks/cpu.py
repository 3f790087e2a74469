"""``stn-face-bench`` (``python -m benchmarks.cpu``): CPU performance figures of stn_face, measured as
ratios inside one run.

Every comparison interleaves the configurations it compares (round after round, in rotating order) and
reports medians, so that other work on the same cores slows both sides alike. Each step is timed in wall
clock and in CPU seconds of the process (plus its DataLoader workers where they run); the CPU-time
figures are the headline ones, as they hardly move when other processes share the cores. By default
torch runs one intra-op thread (``--threads 1``): on an oversubscribed 2-core machine two threads made
a step ~3x slower and their CPU time unstable (OpenMP spin-waits). Sections:

``overhead``   training throughput of :class:`StnFaceModule` under a real ``lightning.Trainer`` against a
               bare PyTorch loop over the same model, optimiser and in-memory batches
               (``framework_overhead_ratio``, target >= 0.95).
``stn``        the spatial transformer's share of a training step with the paper backbone at 112x112, per
               transform family (``stn_step_share``, target <= 5 %): the transformer's own forward +
               backward over the whole step; the step-minus-identity-step difference is reported beside it.
``pipeline``   training throughput reading JPEG crops through the FaceDataModule's DataLoader (2 workers)
               against preloaded tensors, paper backbone (``pipeline_ratio``, target >= 0.9).
``eval``       LFW images embedded per second (each with its mirror image), small backbone.
``precision``  fp32 / bf16-mixed, channels_last, ``torch.compile``: throughput, warm-up and peak RSS, one
               subprocess per configuration (interleaved through a pipe).
``head_memory`` the margin head's memory per rank, full head vs Partial FC, 10k-2M identities on 1, 8 and
               64 ranks: measured where it fits, computed elsewhere (benchmarks/head_memory.py).
``lfw_view2``  the real LFW View 2 evaluation (``score_checkpoint``, all 6,000 pairs), wall seconds from the
               JPEG crops, into a new pixel pack, and from the pack (benchmarks/lfw_view2.py).
``recordio``   read throughput per DataLoader worker, ``data=rec`` (train.rec) against the folder of JPEGs:
               images/s and CPU ms per image (benchmarks/recordio.py).

Each section is its own module beside this one. Writes ``<paths.log_dir>/bench/<YYYY-MM-DD>-<hostname>.json``
(``logs/bench/`` by default; ``--out`` names the file) and prints a table. ``--quick`` runs every
code path with tiny sizes (for the tests; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import Budget, default_output, machine_info, quiet, resolve_crops, shrink_defaults
from benchmarks.evaluation import bench_eval
from benchmarks.head_memory import bench_section as bench_head_memory
from benchmarks.head_memory import table_rows as head_memory_rows
from benchmarks.lfw_view2 import bench_lfw_view2
from benchmarks.lfw_view2 import table as lfw_view2_table
from benchmarks.overhead import bench_overhead
from benchmarks.precision import DEFAULT_PRECISION_CONFIGS, bench_precision
from benchmarks.recordio import bench_recordio
from benchmarks.recordio import table as recordio_table
from benchmarks.stn_pipeline import bench_paper
from benchmarks.utilization import bench_mfu
from benchmarks.utilization import table as mfu_table
from stn_face.errors import InputError, friendly_errors

TARGETS = {
    "framework_overhead_ratio": (">=", 0.95),
    "stn_step_share": ("<=", 0.05),
    "pipeline_ratio": (">=", 0.90),
}
SECTIONS = ("mfu", "lfw_view2", "overhead", "stn", "pipeline", "eval", "precision", "head_memory", "recordio")


# ----------------------------------------------------------------------------------------------- CLI
def section_names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="stn-face-bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks the code paths only")
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS)
    )
    p.add_argument(
        "--out-dir", default=None, help="folder of the JSON (default <paths.log_dir>/bench, logs/bench)"
    )
    p.add_argument("--out", default=None, help="exact JSON path (default <out-dir>/<date>-<host>.json)")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument(
        "--lfw-root",
        default=None,
        help="prepared crops <identity>/<image>.jpg (default: the "
        "cached LFW crops; synthetic JPEGs when there are none)",
    )
    p.add_argument("--small-backbone", default="small", help="backbone config for overhead/eval/precision")
    p.add_argument("--paper-backbone", default="paper_resnet", help="backbone config for stn/pipeline")
    p.add_argument("--transform", default="projective", help="transform of the overhead/eval/precision model")
    p.add_argument(
        "--precision",
        default="auto",
        help="Lightning precision for overhead/stn/pipeline/eval (auto: the cpu trainer's choice)",
    )
    p.add_argument("--batch-small", type=int, default=16)
    p.add_argument("--batch-paper", type=int, default=8)
    p.add_argument("--batch-precision", type=int, default=8)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=128)
    p.add_argument("--distinct-batches", type=int, default=4, help="preloaded batches cycled through")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (eval, precision, recordio)")
    p.add_argument("--recordio-images", type=int, default=1000, help="training items read per recordio round")
    p.add_argument("--overhead-rounds", type=int, default=5, help="interleaved rounds (overhead)")
    p.add_argument("--paper-rounds", type=int, default=2, help="interleaved rounds (stn, pipeline)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=4, help="timed steps per round (overhead)")
    p.add_argument("--paper-steps", type=int, default=1, help="timed steps per configuration per round (stn)")
    p.add_argument("--precision-steps", type=int, default=2, help="timed steps per round (precision)")
    p.add_argument("--isolated-reps", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=8, help="batches timed for the loader alone")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--mfu-backbones", default="small,paper_resnet,iresnet50,dlib_resnet",
                   help="backbones whose training step, forward pass and evaluation pipeline the mfu section measures")
    p.add_argument("--mfu-batch", type=int, default=16, help="images per training / forward batch (mfu)")
    p.add_argument("--mfu-eval-images", type=int, default=256, help="LFW crop files embedded (mfu)")
    p.add_argument("--mfu-eval-batches", default="4,8,16,32,64",
                   help="batch sizes of the evaluation pipeline timed per backbone (mfu; empty: none)")
    p.add_argument("--mfu-main-rounds", type=int, default=6,
                   help="interleaved rounds of the main job's step, old settings against today's defaults (mfu; 0: none)")
    p.add_argument("--mfu-main-batch", type=int, default=0,
                   help="images per main-job step (mfu; 0: the main job's data.batch_size)")
    p.add_argument("--mfu-main-overrides", default="",
                   help="extra overrides of both main-job settings, comma-separated (mfu; --quick: model.compile=false)")
    p.add_argument("--view2-backbones", default="dlib_resnet,small",
                   help="backbones whose LFW View 2 evaluation the lfw_view2 section times")
    p.add_argument("--view2-batch", type=int, default=16, help="crops per network call (lfw_view2)")
    p.add_argument("--view2-rounds", type=int, default=2,
                   help="rounds of the files and pixel-pack evaluations, alternated (lfw_view2)")
    p.add_argument("--view2-pairs-per-fold", type=int, default=0,
                   help="same and different pairs kept per fold (lfw_view2; 0: all 600)")
    p.add_argument(
        "--precision-configs",
        default=DEFAULT_PRECISION_CONFIGS,
        help="fp32|bf16 [+cl] [+compile], comma-separated",
    )
    p.add_argument(
        "--cold-compile",
        action="store_true",
        help="compile with a fresh inductor cache (cold warm-up) instead of the persistent one",
    )
    p.add_argument(
        "--compile-reserve-s",
        type=float,
        default=150.0,
        help="skip a compile warm-up when less of the time budget is left",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; 0: torch's default (one per "
        "core). 1 keeps CPU-time figures clean on a shared machine (see benchmarks/README.md)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=9.5,
        help="time budget: later rounds are dropped and sections skipped when it runs out",
    )
    args = p.parse_args(argv)
    unknown = set(section_names(args.sections)) - set(SECTIONS)
    if unknown:
        raise InputError(
            f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )
    if args.quick:  # tiny sizes for every option left at its default
        quick = {
            "small_backbone": "tiny",
            "paper_backbone": "tiny",
            "batch_small": 4,
            "batch_paper": 4,
            "batch_precision": 4,
            "eval_batch": 8,
            "eval_images": 16,
            "mfu_backbones": "tiny",
            "mfu_batch": 2,
            "mfu_eval_images": 4,
            "mfu_eval_batches": "2",
            "mfu_main_rounds": 1,
            "mfu_main_batch": 2,
            "mfu_main_overrides": "model.compile=false,backbone=tiny",
            "view2_backbones": "tiny",
            "view2_batch": 4,
            "view2_pairs_per_fold": 1,
            "view2_rounds": 1,
            "distinct_batches": 2,
            "rounds": 1,
            "overhead_rounds": 1,
            "paper_rounds": 1,
            "warmup": 1,
            "steps": 2,
            "paper_steps": 1,
            "precision_steps": 1,
            "isolated_reps": 1,
            "loader_batches": 2,
            "precision_configs": "fp32,bf16+cl",
            "recordio_images": 16,
        }
        shrink_defaults(args, p, quick)
    return args


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _met(key: str, value: float | None) -> bool | None:
    if value is None or math.isnan(value):
        return None
    op, target = TARGETS[key]
    return value >= target if op == ">=" else value <= target


def table(result: dict[str, Any]) -> str:
    """The printed summary: CPU-time figures first (robust to other work on the cores), wall-clock after."""
    m = result["machine"]
    lines = [
        f"stn-face-bench on {m['cpu']} ({m['logical_cpus']} CPUs, {m['torch_cpu_capability']}, "
        f"torch threads {m['torch_threads']}), {result['wall_s']:.0f} s, load average "
        f"{m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f}"
        + ("  [--quick: sizes too small to mean anything]" if result["settings"]["quick"] else "")
    ]
    rows = [("figure", "CPU-time", "wall-clock", "target", "met")]
    targets = result["targets"]
    if "overhead" in result:
        o = result["overhead"]
        rows.append(
            (
                "framework_overhead_ratio (Lightning / bare loop)",
                _fmt(o["framework_overhead_ratio"]),
                _fmt(o["framework_overhead_ratio_wall"]),
                ">= 0.95",
                _fmt(targets.get("framework_overhead_ratio")),
            )
        )
        rows.append(
            (
                f"  img/s Lightning | bare ({o['backbone']}, batch {o['batch_size']})",
                f"{_fmt(o['lightning_images_per_cpu_second'])} | {_fmt(o['bare_images_per_cpu_second'])}",
                f"{_fmt(o['lightning_images_per_second'])} | {_fmt(o['bare_images_per_second'])}",
                "",
                "",
            )
        )
    p = result.get("paper", {})
    for family, share in (result.get("stn_step_share") or {}).items():
        wall_share = p["transformer_fwd_bwd_wall_seconds"][family] / p["step_wall_seconds_median"][family]
        rows.append(
            (
                f"stn_step_share[{family}] (step minus identity step)",
                f"{share:.1%} ({p['stn_step_share_diff'][family]:+.1%})",
                (f"{wall_share:.1%} ({p['stn_step_share_diff_wall'][family]:+.1%})"),
                "<= 5%",
                _fmt(targets.get(f"stn_step_share[{family}]")),
            )
        )
    if p:
        rows.append(
            (
                f"  paper step s, identity | projective (batch {p['batch_size']})",
                (
                    f"{_fmt(p['step_cpu_seconds_median'].get('identity'))} | "
                    f"{_fmt(p['step_cpu_seconds_median'].get('projective'))}"
                ),
                (
                    f"{_fmt(p['step_wall_seconds_median'].get('identity'))} | "
                    f"{_fmt(p['step_wall_seconds_median'].get('projective'))}"
                ),
                "",
                "",
            )
        )
    if result.get("pipeline_ratio") is not None:
        rows.append(
            (
                "pipeline_ratio (DataLoader / preloaded)",
                _fmt(p["pipeline_ratio"]),
                _fmt(p["pipeline_ratio_wall"]),
                ">= 0.9",
                _fmt(targets.get("pipeline_ratio")),
            )
        )
        rows.append(
            (
                "  loader alone img/s; worker CPU ms/img",
                "",
                f"{_fmt(p['loader_alone_images_per_second'])}; {_fmt(p['loader_worker_cpu_ms_per_image'])}",
                "",
                "",
            )
        )
    if "eval" in result:
        e = result["eval"]
        rows.append(
            (
                "eval img/s with mirror: DataLoader | model only",
                f"{_fmt(e['eval_images_per_cpu_second'])} | {_fmt(e['model_only_images_per_cpu_second'])}",
                f"{_fmt(e['eval_images_per_second'])} | {_fmt(e['model_only_images_per_second'])}",
                "",
                "",
            )
        )
    for row in result.get("precision_layout", []):
        if row["error"]:
            rows.append((f"train {row['config']}", "-", "-", "", row["error"][:70]))
            continue
        rows.append(
            (
                f"train {row['config']}: img/s (x fp32); warm-up s; peak RSS MB",
                f"{_fmt(row['images_per_cpu_second'])} (x{_fmt(row['speedup_vs_fp32'])})",
                (
                    f"{_fmt(row['images_per_second'])} (x{_fmt(row['speedup_vs_fp32_wall'])}); "
                    f"{_fmt(row['warmup_s'])}; {_fmt(row['peak_rss_mb'], 4)}"
                ),
                "",
                "",
            )
        )
    rows += head_memory_rows(result["head_memory"]) if "head_memory" in result else []
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "CPU-time: images per CPU-second of the training process (+ DataLoader workers where they "
        "run); ratios are medians over interleaved rounds."
    )
    if "recordio" in result:
        lines += ["", recordio_table(result["recordio"])]
    if "mfu" in result:
        lines += ["", mfu_table(result["mfu"])]
    if "lfw_view2" in result:
        lines += ["", *lfw_view2_table(result["lfw_view2"])]
    if result.get("precision"):
        pr = result["precision"]
        lines.append(
            f"precision rows: {pr['backbone']} backbone, batch {pr['batch_size']}, bare loop, one process "
            f"each; torch.compile warm-up with a {pr['compile_cache']} inductor cache."
        )
    for section, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {section}: {reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests) keep their setting


def _run(args: argparse.Namespace) -> dict[str, Any]:
    quiet()
    budget = Budget(args.max_minutes)
    sections = section_names(args.sections)
    result: dict[str, Any] = {
        "schema": 1,
        "date": _dt.date.today().isoformat(),
        "machine": machine_info(),
        "settings": vars(args),
        "skipped": {},
        "targets": {},
        "timings_s": {},
    }
    with tempfile.TemporaryDirectory(prefix="stn-face-bench-") as tmp_name:
        tmp = Path(tmp_name)
        crops, source = resolve_crops(args.lfw_root, tmp)
        result["data"] = source

        def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
            if budget.left() <= 0:
                result["skipped"][name] = "time budget spent"
                return None
            start = time.perf_counter()
            try:
                out = fn()
            except Exception as err:
                logging.getLogger(__name__).exception("section %s failed", name)
                result["skipped"][name] = f"{type(err).__name__}: {err}"[:500]
                return None
            finally:
                result["timings_s"][name] = round(time.perf_counter() - start, 1)
            return out

        if "mfu" in sections:
            out = section("mfu", lambda: bench_mfu(args, crops, budget))
            if out:
                result["mfu"] = out
        if "lfw_view2" in sections:
            out = section("lfw_view2", lambda: bench_lfw_view2(args, budget))
            if out:
                result["lfw_view2"] = out
        if "overhead" in sections:
            out = section("overhead", lambda: bench_overhead(args, crops, budget))
            if out:
                result["overhead"] = out
                result["framework_overhead_ratio"] = out["framework_overhead_ratio"]
        want_stn, want_pipeline = "stn" in sections, "pipeline" in sections
        if want_stn or want_pipeline:
            out = section("stn+pipeline", lambda: bench_paper(args, crops, budget, want_stn, want_pipeline))
            if out:
                result["paper"] = out
                if want_stn:
                    result["stn_step_share"] = out["stn_step_share"]
                if want_pipeline:
                    result["pipeline_ratio"] = out["pipeline_ratio"]
        if "eval" in sections:
            out = section("eval", lambda: bench_eval(args, crops, budget))
            if out:
                result["eval"] = out
                result["eval_images_per_second"] = out["eval_images_per_second"]
        if "precision" in sections:
            out = section("precision", lambda: bench_precision(args, crops, budget, tmp))
            if out:
                result["precision"] = {k: v for k, v in out.items() if k != "precision_layout"}
                result["precision_layout"] = out["precision_layout"]
        if "head_memory" in sections:
            out = section("head_memory", lambda: bench_head_memory(args, budget))
            if out:
                result["head_memory"] = out
        if "recordio" in sections:
            out = section("recordio", lambda: bench_recordio(args, crops, budget))
            if out:
                result["recordio"] = out
    if "framework_overhead_ratio" in result:
        result["targets"]["framework_overhead_ratio"] = _met(
            "framework_overhead_ratio", result["framework_overhead_ratio"]
        )
    for family, share in (result.get("stn_step_share") or {}).items():
        result["targets"][f"stn_step_share[{family}]"] = _met("stn_step_share", share)
    if "pipeline_ratio" in result:
        result["targets"]["pipeline_ratio"] = _met("pipeline_ratio", result["pipeline_ratio"])
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["wall_s"] = budget.elapsed()
    return result


def output_path(args: argparse.Namespace, result: dict[str, Any]) -> Path:
    if args.out:
        return Path(args.out)
    if args.out_dir:
        return Path(args.out_dir) / default_output(result["date"]).name
    return default_output(result["date"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    print(table(result))
    if not args.no_save:
        path = output_path(args, result)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"written {path}")
    return 0


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
