"""Sections ``stn`` and ``pipeline``, one interleaved loop over the paper backbone at 112x112.

``stn``: the spatial transformer's share of a training step, per transform family (``stn_step_share``,
target <= 5 %): the transformer's own forward + backward over the whole step; the step-minus-identity-step
difference is reported beside it. ``pipeline``: training throughput reading JPEG crops through the
FaceDataModule's DataLoader against preloaded tensors (``pipeline_ratio``, target >= 0.9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Budget,
    autocast,
    build_model,
    clock,
    compose,
    datamodule,
    loader_worker_pids,
    median,
    model_overrides,
    preload,
    process_cpu_seconds,
    since,
    trainer_precision,
)
from benchmarks.loops import BareTrainer

STN_FAMILIES = ("similarity", "affine", "projective", "tps")


def _isolated_transformer(
    transformer, images: torch.Tensor, reps: int, precision: str
) -> tuple[float, float]:
    """Forward + backward of the transformer alone (gradient into the localization net and the sampling
    grid): medians of (wall s, CPU s) over ``reps``."""
    grad = torch.randn(images.shape[0], images.shape[1], *transformer.output_size)
    walls, cpus = [], []
    for _ in range(reps):
        start = clock()
        transformer.zero_grad(set_to_none=True)
        with autocast(precision):
            aligned, _ = transformer(images)
        if aligned.requires_grad:
            aligned.backward(grad.to(aligned.dtype))
        wall, cpu = since(start)
        walls.append(wall)
        cpus.append(cpu)
    return median(walls), median(cpus)


def bench_paper(args, crops: Path, budget: Budget, want_stn: bool, want_pipeline: bool) -> dict[str, Any]:
    """The paper backbone at 112x112: identity / similarity / affine / projective transformers on preloaded
    batches (STN share) and the projective one reading JPEGs through the DataLoader (pipeline), all
    interleaved step by step in rotating order over one shared backbone and head."""
    from hydra.utils import instantiate

    precision = trainer_precision(args.precision)
    dm = datamodule(crops, args.batch_paper, args.num_workers)
    loader = dm.train_dataloader()
    start = clock()
    loader_iter = iter(loader)
    first = next(loader_iter)
    loader_startup = since(start)[0]
    batches = [first] + (preload(loader, args.distinct_batches - 1) if args.distinct_batches > 1 else [])
    loader_iter = iter(loader)

    # the loader alone: batches per second and worker CPU per image with nothing else to do
    pids = loader_worker_pids(loader_iter)
    next(loader_iter)
    worker_cpu0, start = process_cpu_seconds(pids), clock()
    delivered = 0
    for _ in range(args.loader_batches):
        try:
            delivered += next(loader_iter)[0].shape[0]
        except StopIteration:
            loader_iter = iter(loader)
            delivered += next(loader_iter)[0].shape[0]
    alone_wall, _ = since(start)
    alone_worker_cpu = process_cpu_seconds(pids) - worker_cpu0

    model, cfg = build_model(model_overrides(args.paper_backbone, "projective"), dm.num_classes)
    families = ["identity", *STN_FAMILIES] if want_stn else ["projective"]
    transformers = {
        name: model.transformer
        if name == "projective"
        else instantiate(compose(model_overrides(args.paper_backbone, name)).transform)
        for name in families
    }
    trainers: dict[str, BareTrainer] = {}
    for name in families:
        model.transformer = transformers[name]
        trainers[name] = BareTrainer(model, precision)
    model.transformer = transformers["projective"]
    order = list(families)
    if want_pipeline:
        trainers["projective_loader"] = BareTrainer(model, precision)
        order.append("projective_loader")

    def run_step(name: str, index: int) -> tuple[float, float]:
        nonlocal loader_iter
        model.transformer = transformers["projective" if name == "projective_loader" else name]
        start = clock()
        if name == "projective_loader":
            try:
                images, labels = next(loader_iter)
            except StopIteration:
                loader_iter = iter(loader)
                images, labels = next(loader_iter)
        else:
            images, labels = batches[index % len(batches)]
        trainers[name].step(images, labels)
        return since(start)

    for i in range(args.warmup):  # warm-up of the shared backbone and head (the transformers are small)
        run_step(order[i % len(order)], i)
    walls: dict[str, list[float]] = {name: [] for name in order}
    cpus: dict[str, list[float]] = {name: [] for name in order}
    isolated: dict[str, list[tuple[float, float]]] = {name: [] for name in families}
    worker_cpu0 = process_cpu_seconds(pids)
    step_index = rounds_done = 0
    for round_index in range(args.paper_rounds):
        if round_index and budget.reserved(0.45):
            break
        shift = round_index % len(order)
        for _ in range(args.paper_steps):
            for name in order[shift:] + order[:shift]:
                wall, cpu = run_step(name, step_index)
                walls[name].append(wall)
                cpus[name].append(cpu)
            step_index += 1
        if want_stn:
            for name in families:
                isolated[name].append(
                    _isolated_transformer(transformers[name], batches[0][0], args.isolated_reps, precision)
                )
        rounds_done += 1
    loader_worker_cpu = process_cpu_seconds(pids) - worker_cpu0
    model.transformer = transformers["projective"]

    wall_med = {name: median(v) for name, v in walls.items()}
    cpu_med = {name: median(v) for name, v in cpus.items()}
    result: dict[str, Any] = {
        "backbone": args.paper_backbone,
        "batch_size": args.batch_paper,
        "precision": precision,
        "rounds": rounds_done,
        "steps_per_round": args.paper_steps,
        "step_wall_seconds_median": wall_med,
        "step_cpu_seconds_median": cpu_med,
        "step_cpu_seconds": cpus,
        "step_wall_seconds": walls,
        "images_per_second": {k: args.batch_paper / v for k, v in wall_med.items()},
    }
    if want_stn:
        iso_cpu = {k: median([c for _, c in v]) for k, v in isolated.items()}
        iso_wall = {k: median([w for w, _ in v]) for k, v in isolated.items()}
        # primary: the transformer's own forward + backward over the whole step (CPU time), like a profiler
        result["stn_step_share"] = {f: iso_cpu[f] / cpu_med[f] for f in STN_FAMILIES}
        # cross-checks: step with the learned transformer minus step with the fixed identity crop
        result["stn_step_share_diff"] = {
            f: (cpu_med[f] - cpu_med["identity"]) / cpu_med[f] for f in STN_FAMILIES
        }
        result["stn_step_share_diff_wall"] = {
            f: (wall_med[f] - wall_med["identity"]) / wall_med[f] for f in STN_FAMILIES
        }
        result["transformer_fwd_bwd_cpu_seconds"] = iso_cpu
        result["transformer_fwd_bwd_wall_seconds"] = iso_wall
        result["localization_net"] = (
            f"conv_channels={list(cfg.localization.conv_channels)} "
            f"fc_dims={list(cfg.localization.fc_dims)} input={cfg.localization.input_size}"
        )
    if want_pipeline:
        loader_steps = len(cpus["projective_loader"])
        worker_per_step = loader_worker_cpu / max(1, loader_steps)
        result["pipeline_ratio"] = cpu_med["projective"] / (cpu_med["projective_loader"] + worker_per_step)
        result["pipeline_ratio_wall"] = wall_med["projective"] / wall_med["projective_loader"]
        result["loader_worker_cpu_seconds_per_step"] = worker_per_step
        result["num_workers"] = args.num_workers
        result["loader_startup_seconds"] = loader_startup
        result["loader_alone_images_per_second"] = delivered / alone_wall
        result["loader_worker_cpu_ms_per_image"] = 1000.0 * alone_worker_cpu / max(1, delivered)
    return result
