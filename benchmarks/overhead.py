"""Section ``overhead``: training throughput of :class:`StnFaceModule` under a real ``lightning.Trainer``
against the bare loop over the same model, optimiser pieces and in-memory batches
(``framework_overhead_ratio``, target >= 0.95). The two alternate round by round, in rotating order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    Budget,
    build_model,
    datamodule,
    median,
    model_overrides,
    preload,
    trainer_precision,
)
from benchmarks.loops import BareTrainer, CycledBatches, bare_run, lightning_run


def bench_overhead(args, crops: Path, budget: Budget) -> dict[str, Any]:
    dm = datamodule(crops, args.batch_small, 0)
    batches = preload(dm.train_dataloader(), args.distinct_batches)
    model, cfg = build_model(model_overrides(args.small_backbone, args.transform), dm.num_classes)
    precision = trainer_precision(args.precision)
    log_every = int(cfg.trainer.log_every_n_steps)
    bare_trainer = BareTrainer(model, precision)
    cycled = CycledBatches(batches, args.warmup + args.steps)
    per_round: list[dict[str, float]] = []
    for round_index in range(args.overhead_rounds):
        if round_index and budget.reserved(0.8):
            break
        order = ("lightning", "bare") if round_index % 2 == 0 else ("bare", "lightning")
        row: dict[str, float] = {}
        for which in order:
            if which == "lightning":
                wall, cpu, images = lightning_run(
                    model, batches, args.steps, args.warmup, precision, log_every
                )
            else:
                bare_trainer.step_count = 0
                wall, cpu, images = bare_run(bare_trainer, cycled, args.warmup)
            row[f"{which}_wall_ips"] = images / wall
            row[f"{which}_cpu_ips"] = images / cpu
        per_round.append(row)

    def col(key: str) -> list[float]:
        return [r[key] for r in per_round]

    cpu_ratios = [r["lightning_cpu_ips"] / r["bare_cpu_ips"] for r in per_round]
    wall_ratios = [r["lightning_wall_ips"] / r["bare_wall_ips"] for r in per_round]
    return {
        "framework_overhead_ratio": median(cpu_ratios),
        "framework_overhead_ratio_wall": median(wall_ratios),
        "ratios_cpu": cpu_ratios,
        "ratios_wall": wall_ratios,
        "lightning_images_per_second": median(col("lightning_wall_ips")),
        "bare_images_per_second": median(col("bare_wall_ips")),
        "lightning_images_per_cpu_second": median(col("lightning_cpu_ips")),
        "bare_images_per_cpu_second": median(col("bare_cpu_ips")),
        "backbone": args.small_backbone,
        "transform": args.transform,
        "batch_size": args.batch_small,
        "precision": precision,
        "steps_per_round": args.steps,
        "rounds": len(per_round),
        "log_every_n_steps": log_every,
        "skipped_steps": int(model.skipped_steps),
    }
