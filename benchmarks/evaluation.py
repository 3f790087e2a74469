"""Section ``eval``: LFW crops embedded per second, each with its mirror image, small backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Budget,
    autocast,
    build_model,
    clock,
    data_config,
    loader_worker_pids,
    median,
    model_overrides,
    process_cpu_seconds,
    since,
    trainer_precision,
)


def bench_eval(args, crops: Path, budget: Budget) -> dict[str, Any]:
    """LFW crops embedded with their mirror images (``StnFaceModule.features``), through a DataLoader with
    workers as validation does, and from preloaded tensors (model only)."""
    from torch.utils.data import DataLoader

    from stn_face.data.augment import eval_transform
    from stn_face.data.datasets import FaceImageDataset

    precision = trainer_precision(args.precision)
    image_size = int(data_config(crops, args.eval_batch, args.num_workers).image_size)
    paths = sorted(crops.glob("*/*.jpg"))[: args.eval_images]
    dataset = FaceImageDataset(paths, None, eval_transform(image_size))
    loader = DataLoader(
        dataset,
        batch_size=args.eval_batch,
        shuffle=False,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
    )
    tensors = [images for images, _ in loader]
    pids = loader_worker_pids(loader._iterator) if args.num_workers > 0 else []
    model, _ = build_model(model_overrides(args.small_backbone, args.transform), 2)
    model.eval()

    def embed(batches, with_workers: bool) -> tuple[float, float, int]:
        count = 0
        worker0, start = (process_cpu_seconds(pids) if with_workers else 0.0), clock()
        with torch.inference_mode(), autocast(precision):
            for batch in batches:
                images = batch[0] if isinstance(batch, (list, tuple)) else batch
                model.features(images)
                count += images.shape[0]
        wall, cpu = since(start)
        return wall, cpu + ((process_cpu_seconds(pids) - worker0) if with_workers else 0.0), count

    embed(tensors[:1], False)  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {"loader": [], "tensors": []}
    for round_index in range(args.rounds):
        if round_index and budget.reserved(0.4):
            break
        for which in ("loader", "tensors") if round_index % 2 == 0 else ("tensors", "loader"):
            wall, cpu, count = embed(loader if which == "loader" else tensors, which == "loader")
            rows[which].append((count / wall, count / cpu))
    return {
        "eval_images_per_second": median([w for w, _ in rows["loader"]]),
        "model_only_images_per_second": median([w for w, _ in rows["tensors"]]),
        "eval_images_per_cpu_second": median([c for _, c in rows["loader"]]),
        "model_only_images_per_cpu_second": median([c for _, c in rows["tensors"]]),
        "images": len(dataset),
        "batch_size": args.eval_batch,
        "num_workers": args.num_workers,
        "backbone": args.small_backbone,
        "transform": args.transform,
        "precision": precision,
        "mirror": True,
        "rounds": len(rows["loader"]),
    }
