"""``stn-face-bench``: CPU performance figures of stn_face, measured as ratios inside one run.

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

Writes ``benchmarks/results/<YYYY-MM-DD>-<hostname>.json`` and prints a table. ``--quick`` runs every
code path with tiny sizes (for the tests; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
import torch.nn.functional as F

from stn_face.paths import REPO_ROOT, cache_dir

TARGETS = {
    "framework_overhead_ratio": (">=", 0.95),
    "stn_step_share": ("<=", 0.05),
    "pipeline_ratio": (">=", 0.90),
}
STN_FAMILIES = ("similarity", "affine", "projective")
DEFAULT_PRECISION_CONFIGS = "fp32,fp32+cl,bf16,bf16+cl,fp32+compile"
SECTIONS = ("overhead", "stn", "pipeline", "eval", "precision")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


# ------------------------------------------------------------------------------------------ helpers
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _quiet() -> None:
    import lightning.pytorch  # noqa: F401 - it sets its loggers' levels on import; override them after

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torch._inductor", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Budget:
    """Wall-clock budget of the whole run: rounds are dropped, then sections skipped, when it runs out."""

    def __init__(self, minutes: float) -> None:
        self.start = time.perf_counter()
        self.total = minutes * 60.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()

    def reserved(self, fraction: float) -> bool:
        """True once less than ``fraction`` of the budget is left (kept for the sections still to come)."""
        return self.left() < fraction * self.total


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machine_info() -> dict[str, Any]:
    import lightning

    from stn_face.config import _cpu_precision

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": {k: k in flags for k in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_trainer_precision": _cpu_precision(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()),
    }


def compose(overrides: Sequence[str]):
    """``train.yaml`` composed as the CLI would (model parts only are instantiated from it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stn_face.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def model_overrides(
    backbone: str, transform: str = "projective", channels_last: bool = False, compile: bool = False
) -> list[str]:
    # margin switched on from the first step (the steady state of a long run); a long cosine schedule
    return [
        f"backbone={backbone}",
        f"transform={transform}",
        "model.margin_warmup_steps=0",
        "trainer.max_steps=1000000",
        f"model.channels_last={str(channels_last).lower()}",
        f"model.compile={str(compile).lower()}",
        "logger=none",
    ]


def build_model(overrides: Sequence[str], num_classes: int):
    from hydra.utils import instantiate

    cfg = compose(overrides)
    return instantiate(cfg.model, num_classes=num_classes), cfg


def autocast(precision: str, device_type: str = "cpu"):
    """The autocast Lightning's ``precision`` uses (``bf16-mixed``, ``16-mixed``), or nothing."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- data
def synthetic_crops(folder: Path, identities: int = 24, per_identity: int = 6, size: int = 128) -> Path:
    """Random-texture 128x128 JPEGs laid out as ``<identity>/<image>.jpg`` (when no real crops exist)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(identities):
        sub = folder / f"person_{i:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
            image = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(sub / f"img_{j:03d}.jpg"), image)
    return folder


def resolve_crops(root: str | None, tmp: Path) -> tuple[Path, str]:
    """The crop folder to read: ``root``, else the prepared LFW crops in the cache, else synthetic JPEGs."""
    if root:
        path = Path(root)
        if not path.is_dir():
            raise FileNotFoundError(f"--lfw-root {root} is not a folder")
        return path, str(path)
    default = cache_dir() / "prepared" / "lfw-crop128"
    if default.is_dir() and sum(1 for _ in zip(range(50), default.glob("*/*.jpg"))) >= 50:
        return default, str(default)
    logging.getLogger(__name__).warning(
        "no prepared LFW crops at %s (run stn-face-train experiment=smoke or "
        "stn-face-prepare first); using synthetic JPEGs",
        default,
    )
    return synthetic_crops(tmp / "synthetic-crops"), "synthetic"


def datamodule(root: Path, batch_size: int, num_workers: int):
    from stn_face.data.datamodule import FaceDataModule

    dm = FaceDataModule(
        root=str(root),
        min_images_per_identity=2,
        batch_size=batch_size,
        num_workers=num_workers,
        image_size=128,
        augment={"hflip": 0.5},
    )
    dm.setup("fit")
    return dm


def preload(loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    while len(batches) < count:
        for images, labels in loader:
            batches.append((images.contiguous(), labels))
            if len(batches) == count:
                break
    return batches


class CycledBatches:
    """``length`` batches cycling through a list: an iterable Lightning treats as one dataloader."""

    def __init__(self, batches: Sequence, length: int) -> None:
        self.batches, self.length = list(batches), length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.length))


# ------------------------------------------------------------------------------------------- clocks
def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of other live processes (DataLoader workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def loader_worker_pids(iterator) -> list[int]:
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid]


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    return median(numerator) / median(denominator) if numerator and denominator else float("nan")


# -------------------------------------------------------------------------------------- bare training
class BareTrainer:
    """A plain PyTorch training loop over the same parts the LightningModule trains: transformer ->
    backbone -> margin head, cross-entropy, SGD with the main and localization parameter groups
    (localization at ``localization_lr_mult`` times the rate), localization gradient-norm clipping and
    the same per-step learning-rate schedule. No finiteness check, no logging."""

    def __init__(self, model, precision: str = "32-true", scaler: Any = None) -> None:
        self.model = model
        self.precision = precision
        self.scaler = scaler  # a torch.amp.GradScaler for 16-mixed
        localization = set(model.transformer.parameters())
        rest = [p for p in model.parameters() if p not in localization and p.requires_grad]
        groups = [{"params": rest}]
        base_lr = model.optimizer_factory.keywords.get("lr", 0.01)
        if localization:
            groups.append({"params": list(localization), "lr": base_lr * model.localization_lr_mult})
        self.optimizer = model.optimizer_factory(params=groups)
        self.scheduler = (
            model.scheduler_factory(optimizer=self.optimizer) if model.scheduler_factory else None
        )
        self.localization = model.transformer.localization
        self.clip = model.localization_grad_clip
        self.step_count = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        margin = 0.0 if self.step_count < model.margin_warmup_steps else 1.0
        with autocast(self.precision, images.device.type):
            embeddings, _, _ = model.embed(images)
            loss = F.cross_entropy(model.head(embeddings, labels, margin_factor=margin), labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.localization is not None and self.clip:
            torch.nn.utils.clip_grad_norm_(self.localization.parameters(), self.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        return loss.detach()


def bare_run(trainer: BareTrainer, batches: Iterable, warmup: int) -> tuple[float, float, int]:
    """Train on every batch; returns (wall s, CPU s, images) of the steps after the first ``warmup``."""
    stamps, sizes = [], []
    for images, labels in batches:
        stamps.append(clock())
        trainer.step(images, labels)
        sizes.append(images.shape[0])
    wall, cpu = since(stamps[warmup])
    return wall, cpu, sum(sizes[warmup:])


# -------------------------------------------------------------------------------- framework overhead
def lightning_run(
    model, batches: Sequence, steps: int, warmup: int, precision: str, log_every_n_steps: int
) -> tuple[float, float, int]:
    """Fit ``model`` for ``warmup + steps`` steps under a real Trainer (no logger, progress bar or
    checkpointing); returns (wall s, CPU s, images) of the steps after the warm-up, from the first timed
    batch's start hook to the last batch's end hook."""
    import lightning as L

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[tuple[float, float]] = []
            self.end = (0.0, 0.0)
            self.sizes: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.starts.append(clock())
            self.sizes.append(batch[0].shape[0])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.end = clock()

    timer = Clock()
    total = warmup + steps
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=total,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=log_every_n_steps,
        callbacks=[timer],
        deterministic=False,
        benchmark=False,
    )
    trainer.fit(model, train_dataloaders=CycledBatches(batches, total))
    start = timer.starts[warmup]
    return timer.end[0] - start[0], timer.end[1] - start[1], sum(timer.sizes[warmup:])


def bench_overhead(args, crops: Path, budget: Budget) -> dict[str, Any]:
    dm = datamodule(crops, args.batch_small, 0)
    batches = preload(dm.train_dataloader(), args.distinct_batches)
    model, cfg = build_model(model_overrides(args.small_backbone, args.transform), dm.num_classes)
    precision = run_precision(args)
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


def run_precision(args) -> str:
    from stn_face.config import _cpu_precision

    return _cpu_precision() if args.precision == "auto" else args.precision


# --------------------------------------------------------------------------- STN share and pipeline
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

    precision = run_precision(args)
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


# ------------------------------------------------------------------------------------------ evaluation
def bench_eval(args, crops: Path, budget: Budget) -> dict[str, Any]:
    """LFW crops embedded with their mirror images (``StnFaceModule.features``), through a DataLoader with
    workers as validation does, and from preloaded tensors (model only)."""
    from torch.utils.data import DataLoader

    from stn_face.data.datasets import FaceImageDataset
    from stn_face.data.transforms import eval_transform

    precision = run_precision(args)
    paths = sorted(crops.glob("*/*.jpg"))[: args.eval_images]
    dataset = FaceImageDataset(paths, None, eval_transform(128))
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


# ------------------------------------------------------------------------ precision / layout / compile
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


def _worker(spec_json: str) -> int:
    """A configuration's own process: reads commands from stdin, answers one JSON line each."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    _quiet()
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
            [sys.executable, "-m", "stn_face.bench", "--worker", json.dumps(spec)],
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


# ----------------------------------------------------------------------------------------------- CLI
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
    p.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
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
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (eval, precision)")
    p.add_argument("--overhead-rounds", type=int, default=5, help="interleaved rounds (overhead)")
    p.add_argument("--paper-rounds", type=int, default=2, help="interleaved rounds (stn, pipeline)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=4, help="timed steps per round (overhead)")
    p.add_argument("--paper-steps", type=int, default=1, help="timed steps per configuration per round (stn)")
    p.add_argument("--precision-steps", type=int, default=2, help="timed steps per round (precision)")
    p.add_argument("--isolated-reps", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=8, help="batches timed for the loader alone")
    p.add_argument("--num-workers", type=int, default=2)
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
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # tiny sizes for every option left at its default
        quick = {
            "small_backbone": "tiny",
            "paper_backbone": "tiny",
            "batch_small": 4,
            "batch_paper": 4,
            "batch_precision": 4,
            "eval_batch": 8,
            "eval_images": 16,
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
        }
        for key, value in quick.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
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
                f"{wall_share:.1%} "
                f"({p['stn_step_share_diff_wall'][family]:+.1%})",
                "<= 5%",
                _fmt(targets.get(f"stn_step_share[{family}]")),
            )
        )
    if p:
        rows.append(
            (
                f"  paper step s, identity | projective (batch {p['batch_size']})",
                f"{_fmt(p['step_cpu_seconds_median'].get('identity'))} | "
                f"{_fmt(p['step_cpu_seconds_median'].get('projective'))}",
                f"{_fmt(p['step_wall_seconds_median'].get('identity'))} | "
                f"{_fmt(p['step_wall_seconds_median'].get('projective'))}",
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
                f"{_fmt(row['images_per_second'])} (x{_fmt(row['speedup_vs_fp32_wall'])}); "
                f"{_fmt(row['warmup_s'])}; {_fmt(row['peak_rss_mb'], 4)}",
                "",
                "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "CPU-time: images per CPU-second of the training process (+ DataLoader workers where they "
        "run); ratios are medians over interleaved rounds."
    )
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
    _quiet()
    budget = Budget(args.max_minutes)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    result: dict[str, Any] = {
        "schema": 1,
        "date": _dt.date.today().isoformat(),
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
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
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in result["machine"]["host"]) or "host"
    return Path(args.out_dir) / f"{result['date']}-{host}.json"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return _worker(args.worker)
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
    sys.exit(main())
