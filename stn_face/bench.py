"""``stn-face-bench``: CPU performance figures of stn_face, measured as ratios inside one run.

Every comparison interleaves the configurations it compares (round after round, in rotating order)
and reports medians, so that other work on the same cores slows both sides alike. Sections:

``overhead``   training throughput of :class:`StnFaceModule` under a real ``lightning.Trainer`` against a
               bare PyTorch loop over the same model, optimiser and in-memory batches
               (``framework_overhead_ratio``, target >= 0.95).
``stn``        the spatial transformer's share of a training step with the paper backbone at 112x112, per
               transform family (``stn_step_share``, target <= 5 %).
``pipeline``   training throughput reading JPEG crops through the FaceDataModule's DataLoader against
               preloaded tensors, paper backbone (``pipeline_ratio``, target >= 0.9).
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
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stn_face.paths import REPO_ROOT, cache_dir  # noqa: E402

TARGETS = {"framework_overhead_ratio": (">=", 0.95), "stn_step_share": ("<=", 0.05), "pipeline_ratio": (">=", 0.90)}
STN_FAMILIES = ("similarity", "affine", "projective")
DEFAULT_PRECISION_CONFIGS = "fp32,fp32+cl,bf16,bf16+cl,fp32+compile"
SECTIONS = ("overhead", "stn", "pipeline", "eval", "precision")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


# ------------------------------------------------------------------------------------------ helpers
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torch._inductor", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Budget:
    """Wall-clock budget of the whole run: sections shrink to one round, then are skipped, when it runs out."""

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


def model_overrides(backbone: str, transform: str = "projective", channels_last: bool = False,
                    compile: bool = False) -> list[str]:
    # margin switched on from the first step (the steady state of a long run); a long cosine schedule
    return [f"backbone={backbone}", f"transform={transform}", "model.margin_warmup_steps=0",
            "trainer.max_steps=1000000", f"model.channels_last={str(channels_last).lower()}",
            f"model.compile={str(compile).lower()}", "logger=none"]


def build_model(overrides: Sequence[str], num_classes: int):
    from hydra.utils import instantiate

    cfg = compose(overrides)
    return instantiate(cfg.model, num_classes=num_classes), cfg


def autocast(precision: str):
    """The autocast Lightning's ``precision`` uses on the CPU (``bf16-mixed``), or nothing."""
    if precision == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
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
    logging.getLogger(__name__).warning("no prepared LFW crops at %s (run stn-face-train experiment=smoke or "
                                        "stn-face-prepare first); using synthetic JPEGs", default)
    return synthetic_crops(tmp / "synthetic-crops"), "synthetic"


def datamodule(root: Path, batch_size: int, num_workers: int):
    from stn_face.data.datamodule import FaceDataModule

    dm = FaceDataModule(root=str(root), min_images_per_identity=2, batch_size=batch_size, num_workers=num_workers,
                        image_size=128, augment={"hflip": 0.5})
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


# -------------------------------------------------------------------------------------- bare training
class BareTrainer:
    """A plain PyTorch training loop over the same parts the LightningModule trains: transformer ->
    backbone -> margin head, cross-entropy, SGD with the main and localization parameter groups
    (localization at ``localization_lr_mult`` times the rate), localization gradient-norm clipping and
    the same per-step learning-rate schedule. No finiteness check, no logging."""

    def __init__(self, model, precision: str = "32-true") -> None:
        self.model = model
        self.precision = precision
        localization = set(model.transformer.parameters())
        rest = [p for p in model.parameters() if p not in localization and p.requires_grad]
        groups = [{"params": rest}]
        base_lr = model.optimizer_factory.keywords.get("lr", 0.01)
        if localization:
            groups.append({"params": list(localization), "lr": base_lr * model.localization_lr_mult})
        self.optimizer = model.optimizer_factory(params=groups)
        self.scheduler = model.scheduler_factory(optimizer=self.optimizer) if model.scheduler_factory else None
        self.localization = model.transformer.localization
        self.clip = model.localization_grad_clip
        self.step_count = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        margin = 0.0 if self.step_count < model.margin_warmup_steps else 1.0
        with autocast(self.precision):
            embeddings, _, _ = model.embed(images)
            loss = F.cross_entropy(model.head(embeddings, labels, margin_factor=margin), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.localization is not None and self.clip:
            torch.nn.utils.clip_grad_norm_(self.localization.parameters(), self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        return loss.detach()


def bare_run(trainer: BareTrainer, batches: Iterable, warmup: int) -> tuple[float, int]:
    """Train on every batch; returns (seconds, images) of the steps after the first ``warmup``."""
    stamps, sizes = [], []
    for images, labels in batches:
        stamps.append(time.perf_counter())
        trainer.step(images, labels)
        sizes.append(images.shape[0])
    stamps.append(time.perf_counter())
    return stamps[-1] - stamps[warmup], sum(sizes[warmup:])


# -------------------------------------------------------------------------------- framework overhead
def lightning_run(model, batches: Sequence, steps: int, warmup: int, precision: str,
                  log_every_n_steps: int) -> tuple[float, int]:
    """Fit ``model`` for ``warmup + steps`` steps under a real Trainer (no logger, progress bar or
    checkpointing); returns (seconds, images) of the steps after the warm-up, between batch hooks."""
    import lightning as L

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.end = 0.0
            self.sizes: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.starts.append(time.perf_counter())
            self.sizes.append(batch[0].shape[0])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.end = time.perf_counter()

    clock = Clock()
    total = warmup + steps
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=total, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        log_every_n_steps=log_every_n_steps, callbacks=[clock], deterministic=False,
                        benchmark=False)
    trainer.fit(model, train_dataloaders=CycledBatches(batches, total))
    return clock.end - clock.starts[warmup], sum(clock.sizes[warmup:])


def bench_overhead(args, crops: Path, budget: Budget) -> dict[str, Any]:
    from stn_face.config import _cpu_precision

    dm = datamodule(crops, args.batch_small, 0)
    batches = preload(dm.train_dataloader(), args.distinct_batches)
    model, cfg = build_model(model_overrides(args.small_backbone, args.transform), dm.num_classes)
    precision = _cpu_precision() if args.precision == "auto" else args.precision
    log_every = int(cfg.trainer.log_every_n_steps)
    bare_trainer = BareTrainer(model, precision)
    cycled = CycledBatches(batches, args.warmup + args.steps)
    lightning_ips, bare_ips, ratios = [], [], []
    for round_index in range(args.rounds):
        if round_index and budget.reserved(0.8):
            break
        order = ("lightning", "bare") if round_index % 2 == 0 else ("bare", "lightning")
        result = {}
        for which in order:
            if which == "lightning":
                seconds, images = lightning_run(model, batches, args.steps, args.warmup, precision, log_every)
            else:
                bare_trainer.step_count = 0
                seconds, images = bare_run(bare_trainer, cycled, args.warmup)
            result[which] = images / seconds
        lightning_ips.append(result["lightning"])
        bare_ips.append(result["bare"])
        ratios.append(result["lightning"] / result["bare"])
    return {
        "framework_overhead_ratio": median(ratios),
        "lightning_images_per_second": median(lightning_ips),
        "bare_images_per_second": median(bare_ips),
        "ratios": ratios,
        "backbone": args.small_backbone, "transform": args.transform, "batch_size": args.batch_small,
        "precision": precision, "steps_per_round": args.steps, "rounds": len(ratios),
        "log_every_n_steps": log_every,
        "skipped_steps": int(model.skipped_steps),
    }


# --------------------------------------------------------------------------- STN share and pipeline
def _isolated_transformer_seconds(transformer, images: torch.Tensor, reps: int, precision: str) -> float:
    """Forward + backward of the transformer alone (gradient into the localization net), median of reps."""
    grad = torch.randn(images.shape[0], images.shape[1], *transformer.output_size)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        transformer.zero_grad(set_to_none=True)
        with autocast(precision):
            aligned, _ = transformer(images)
        if aligned.requires_grad:
            aligned.backward(grad.to(aligned.dtype))
        times.append(time.perf_counter() - start)
    return median(times)


def bench_paper(args, crops: Path, budget: Budget, want_stn: bool, want_pipeline: bool) -> dict[str, Any]:
    """The paper backbone at 112x112: identity / similarity / affine / projective transformers on preloaded
    batches (STN share) and the projective one reading through the DataLoader (pipeline), all interleaved
    step by step."""
    from hydra.utils import instantiate

    from stn_face.config import _cpu_precision

    precision = _cpu_precision() if args.precision == "auto" else args.precision
    dm = datamodule(crops, args.batch_paper, args.num_workers)
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    loader_iter = iter(loader)
    first = next(loader_iter)
    loader_startup = time.perf_counter() - t0
    batches = [first] + preload(loader, args.distinct_batches - 1) if args.distinct_batches > 1 else [first]

    # loader alone: how fast the DataLoader delivers batches with nothing else to do
    stamps = [time.perf_counter()]
    for _ in range(args.loader_batches):
        try:
            next(loader_iter)
        except StopIteration:
            loader_iter = iter(loader)
            next(loader_iter)
        stamps.append(time.perf_counter())
    loader_alone_ips = args.batch_paper * args.loader_batches / max(stamps[-1] - stamps[0], 1e-9)

    model, cfg = build_model(model_overrides(args.paper_backbone, "projective"), dm.num_classes)
    configs: dict[str, Any] = {}
    families = ["identity", *STN_FAMILIES] if want_stn else ["projective"]
    for family in families:
        if family == "projective":
            transformer = model.transformer
        else:
            transformer = instantiate(compose(model_overrides(args.paper_backbone, family)).transform)
        configs[family] = transformer
    order = list(families) + (["projective_loader"] if want_pipeline else [])

    # every configuration trains the same backbone and head; only the transformer differs
    def make_trainer(transformer) -> BareTrainer:
        model.transformer = transformer
        return BareTrainer(model, precision)

    trainers = {name: make_trainer(configs[name]) for name in families}
    model.transformer = configs["projective"]
    if want_pipeline:
        trainers["projective_loader"] = BareTrainer(model, precision)

    def run_step(name: str, index: int) -> float:
        model.transformer = configs["projective" if name == "projective_loader" else name]
        trainer = trainers[name]
        start = time.perf_counter()
        if name == "projective_loader":
            nonlocal loader_iter
            try:
                images, labels = next(loader_iter)
            except StopIteration:
                loader_iter = iter(loader)
                images, labels = next(loader_iter)
        else:
            images, labels = batches[index % len(batches)]
        trainer.step(images, labels)
        return time.perf_counter() - start

    step_times: dict[str, list[float]] = {name: [] for name in order}
    isolated: dict[str, list[float]] = {name: [] for name in families}
    for name in order:  # warm-up
        for i in range(args.warmup):
            run_step(name, i)
    step_index = 0
    rounds_done = 0
    for round_index in range(args.rounds):
        if round_index and budget.reserved(0.5):
            break
        rotation = order[round_index % len(order):] + order[: round_index % len(order)]
        for _ in range(args.paper_steps):
            for name in rotation:
                step_times[name].append(run_step(name, step_index))
            step_index += 1
        if want_stn:
            images = batches[0][0]
            for name in families:
                isolated[name].append(_isolated_transformer_seconds(configs[name], images, args.isolated_reps,
                                                                    precision))
        rounds_done += 1
    model.transformer = configs["projective"]

    med = {name: median(times) for name, times in step_times.items()}
    result: dict[str, Any] = {"backbone": args.paper_backbone, "batch_size": args.batch_paper,
                              "precision": precision, "rounds": rounds_done, "steps_per_round": args.paper_steps,
                              "step_seconds_median": med,
                              "images_per_second": {k: args.batch_paper / v for k, v in med.items()}}
    if want_stn:
        shares, isolated_shares = {}, {}
        per_round: dict[str, list[float]] = {}
        for family in STN_FAMILIES:
            shares[family] = (med[family] - med["identity"]) / med[family]
            isolated_shares[family] = median(isolated[family]) / med[family]
            per_round[family] = [(s - i) / s for s, i in zip(step_times[family], step_times["identity"])]
        result["stn_step_share"] = shares
        result["stn_step_share_isolated"] = isolated_shares
        result["stn_step_share_per_step"] = per_round
        result["transformer_fwd_bwd_seconds"] = {k: median(v) for k, v in isolated.items()}
        result["localization_net"] = str(cfg.localization._target_).rsplit(".", 1)[-1] + " " + str(
            list(cfg.localization.conv_channels))
    if want_pipeline:
        ratios = [p / lo for p, lo in zip(step_times["projective"], step_times["projective_loader"])]
        result["pipeline_ratio"] = med["projective"] / med["projective_loader"]
        result["pipeline_ratio_per_step"] = ratios
        result["num_workers"] = args.num_workers
        result["loader_startup_seconds"] = loader_startup
        result["loader_alone_images_per_second"] = loader_alone_ips
    return result


# ------------------------------------------------------------------------------------------ evaluation
def bench_eval(args, crops: Path, budget: Budget) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from stn_face.config import _cpu_precision
    from stn_face.data.datasets import FaceImageDataset
    from stn_face.data.transforms import eval_transform

    precision = _cpu_precision() if args.precision == "auto" else args.precision
    paths = sorted(crops.glob("*/*.jpg"))[: args.eval_images]
    dataset = FaceImageDataset(paths, None, eval_transform(128))
    loader = DataLoader(dataset, batch_size=args.eval_batch, shuffle=False, num_workers=args.num_workers,
                        persistent_workers=args.num_workers > 0)
    tensors = [images for images, _ in loader]
    model, _ = build_model(model_overrides(args.small_backbone, args.transform), 2)
    model.eval()

    def embed(batches) -> tuple[float, int]:
        count = 0
        start = time.perf_counter()
        with torch.inference_mode(), autocast(precision):
            for batch in batches:
                images = batch[0] if isinstance(batch, (list, tuple)) else batch
                model.features(images)
                count += images.shape[0]
        return time.perf_counter() - start, count

    embed(tensors[:1])  # warm-up
    loader_ips, tensor_ips = [], []
    for round_index in range(args.rounds):
        if round_index and budget.reserved(0.4):
            break
        for which in (("loader", "tensors") if round_index % 2 == 0 else ("tensors", "loader")):
            seconds, count = embed(loader if which == "loader" else tensors)
            (loader_ips if which == "loader" else tensor_ips).append(count / seconds)
    return {"eval_images_per_second": median(loader_ips), "model_only_images_per_second": median(tensor_ips),
            "images": len(dataset), "batch_size": args.eval_batch, "num_workers": args.num_workers,
            "backbone": args.small_backbone, "transform": args.transform, "precision": precision,
            "mirror": True, "rounds": len(loader_ips)}


# ------------------------------------------------------------------------ precision / layout / compile
def parse_precision_config(name: str) -> dict[str, Any]:
    parts = name.split("+")
    if parts[0] not in PRECISIONS or any(p not in ("cl", "compile") for p in parts[1:]):
        raise ValueError(f"precision config {name!r}: write fp32 or bf16, optionally +cl and/or +compile")
    return {"name": name, "precision": PRECISIONS[parts[0]], "channels_last": "cl" in parts[1:],
            "compile": "compile" in parts[1:]}


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
    model, _ = build_model(model_overrides(spec["backbone"], spec["transform"], config["channels_last"],
                                           config["compile"]), spec["num_classes"])
    trainer = BareTrainer(model, config["precision"])

    def reply(**payload: Any) -> None:
        payload["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        out.write(json.dumps(payload) + "\n")

    reply(ready=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "run":
                times = []
                for _ in range(int(command["steps"])):
                    start = time.perf_counter()
                    trainer.step(images, labels)
                    times.append(time.perf_counter() - start)
                reply(times=times)
            elif command["op"] == "quit":
                reply(bye=True)
                return 0
        except Exception as err:  # noqa: BLE001 - reported to the parent (e.g. a compile failure)
            reply(error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500])
    return 0


class Worker:
    def __init__(self, spec: dict[str, Any], env: dict[str, str], log_file: Path) -> None:
        self.spec = spec
        self.log = open(log_file, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "stn_face.bench", "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, bufsize=1)

    def ask(self, command: dict[str, Any] | None = None) -> dict[str, Any]:
        if command is not None:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = Path(self.log.name).read_text().strip().splitlines()[-3:]
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
    configs = [parse_precision_config(c) for c in args.precision_configs.split(",") if c]
    dm = datamodule(crops, args.batch_precision, 0)
    images, labels = preload(dm.train_dataloader(), 1)[0]
    batch_file = tmp / "precision-batch.pt"
    torch.save((images, labels), batch_file)
    env = dict(os.environ)
    # a fresh inductor cache: the reported compile warm-up is a cold start, as on a new machine
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor-cache"))
    results: dict[str, dict[str, Any]] = {}
    workers: dict[str, Worker] = {}
    try:
        for config in configs:
            spec = {"config": config["name"], "backbone": args.small_backbone, "transform": args.transform,
                    "num_classes": dm.num_classes, "batch_file": str(batch_file), "threads": args.threads}
            workers[config["name"]] = Worker(spec, env, tmp / f"worker-{config['name']}.log")
            results[config["name"]] = dict(config, times=[], error=None)
        for name, worker in workers.items():  # all start (import, build) concurrently; not timed
            answer = worker.ask()
            if "error" in answer:
                results[name]["error"] = answer["error"]
        # warm-up one configuration at a time (compile warm-up is timed alone)
        for name, worker in workers.items():
            result = results[name]
            if result["error"]:
                continue
            if result["compile"] and budget.left() < args.compile_reserve_s:
                result["error"] = f"skipped: less than {args.compile_reserve_s:.0f} s of the time budget left"
                continue
            answer = worker.ask({"op": "run", "steps": 1 + args.warmup})
            if "error" in answer:
                result["error"] = answer["error"]
                continue
            result["warmup_first_step_s"] = answer["times"][0]
            result["warmup_s"] = sum(answer["times"])
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
                    results[name]["times"] += answer["times"]
        for name, worker in workers.items():
            answer = worker.ask({"op": "quit"}) if worker.proc.poll() is None else {}
            results[name]["peak_rss_mb"] = answer.get("max_rss_mb")
    finally:
        for worker in workers.values():
            worker.close()
    rows = []
    baseline = next((r for r in results.values() if r["times"] and r["precision"] == "32-true"
                     and not r["channels_last"] and not r["compile"]), None)
    for name, r in results.items():
        step = median(r["times"]) if r["times"] else None
        row = {"config": name, "precision": r["precision"], "channels_last": r["channels_last"],
               "compile": r["compile"], "step_seconds_median": step,
               "images_per_second": args.batch_precision / step if step else None,
               "speedup_vs_fp32": (median(baseline["times"]) / step) if (baseline and step) else None,
               "warmup_first_step_s": r.get("warmup_first_step_s"), "warmup_s": r.get("warmup_s"),
               "peak_rss_mb": r.get("peak_rss_mb"), "steps": len(r["times"]), "error": r["error"]}
        rows.append(row)
    return {"precision_layout": rows, "backbone": args.small_backbone, "transform": args.transform,
            "batch_size": args.batch_precision}


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stn-face-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks the code paths only")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    p.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--out", default=None, help="exact JSON path (default <out-dir>/<date>-<host>.json)")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--lfw-root", default=None, help="prepared crops <identity>/<image>.jpg (default: the "
                   "cached LFW crops; synthetic JPEGs when there are none)")
    p.add_argument("--small-backbone", default="small", help="backbone config for overhead/eval/precision")
    p.add_argument("--paper-backbone", default="paper_resnet", help="backbone config for stn/pipeline")
    p.add_argument("--transform", default="projective", help="transform of the overhead/eval/precision model")
    p.add_argument("--precision", default="auto", help="Lightning precision for overhead/stn/pipeline/eval "
                   "(auto: the cpu trainer's choice)")
    p.add_argument("--batch-small", type=int, default=32)
    p.add_argument("--batch-paper", type=int, default=8)
    p.add_argument("--batch-precision", type=int, default=16)
    p.add_argument("--eval-batch", type=int, default=128)
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--distinct-batches", type=int, default=4, help="preloaded batches cycled through")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=4, help="timed steps per round (overhead)")
    p.add_argument("--paper-steps", type=int, default=1, help="timed steps per configuration per round (stn)")
    p.add_argument("--precision-steps", type=int, default=2, help="timed steps per round (precision)")
    p.add_argument("--isolated-reps", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=8, help="batches timed for the loader alone")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--precision-configs", default=DEFAULT_PRECISION_CONFIGS,
                   help="fp32|bf16 [+cl] [+compile], comma-separated")
    p.add_argument("--compile-reserve-s", type=float, default=150.0,
                   help="skip a compile warm-up when less of the time budget is left")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--max-minutes", type=float, default=9.5, help="time budget: later rounds are dropped "
                   "and sections skipped when it runs out")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.small_backbone = "tiny"
        args.paper_backbone = "tiny"
        args.batch_small = args.batch_paper = args.batch_precision = 4
        args.eval_batch, args.eval_images = 8, 16
        args.distinct_batches, args.rounds, args.warmup = 2, 1, 1
        args.steps, args.paper_steps, args.precision_steps, args.isolated_reps = 2, 1, 1, 1
        args.loader_batches = 2
        if args.precision_configs == DEFAULT_PRECISION_CONFIGS:
            args.precision_configs = "fp32,bf16+cl"
    return args


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _met(key: str, value: float | None) -> bool | None:
    if value is None or value != value:
        return None
    op, target = TARGETS[key]
    return value >= target if op == ">=" else value <= target


def table(result: dict[str, Any]) -> str:
    lines = [f"stn-face-bench on {result['machine']['cpu']} ({result['machine']['logical_cpus']} CPUs, "
             f"{result['machine']['torch_cpu_capability']}), {result['wall_s']:.0f} s"
             + ("  [--quick: sizes too small to mean anything]" if result["settings"]["quick"] else "")]
    rows = [("figure", "value", "target", "met")]
    fo = result.get("framework_overhead_ratio")
    rows.append(("framework_overhead_ratio (Lightning/bare img/s)", _fmt(fo), ">= 0.95",
                 _fmt(result["targets"].get("framework_overhead_ratio"))))
    if "overhead" in result:
        o = result["overhead"]
        rows.append(("  Lightning / bare img/s", f"{_fmt(o['lightning_images_per_second'])} / "
                     f"{_fmt(o['bare_images_per_second'])}", "", ""))
    for family, share in (result.get("stn_step_share") or {}).items():
        iso = result["paper"]["stn_step_share_isolated"][family]
        rows.append((f"stn_step_share[{family}] (diff; isolated)", f"{share:.1%}; {iso:.1%}", "<= 5%",
                     _fmt(result["targets"].get(f"stn_step_share[{family}]"))))
    if result.get("pipeline_ratio") is not None:
        p = result["paper"]
        rows.append(("pipeline_ratio (DataLoader/preloaded)", _fmt(result["pipeline_ratio"]), ">= 0.9",
                     _fmt(result["targets"].get("pipeline_ratio"))))
        rows.append(("  loader alone img/s; paper train img/s", f"{_fmt(p['loader_alone_images_per_second'])}; "
                     f"{_fmt(p['images_per_second'].get('projective'))}", "", ""))
    if "eval" in result:
        e = result["eval"]
        rows.append(("eval LFW img/s with mirror (loader; model only)",
                     f"{_fmt(e['eval_images_per_second'])}; {_fmt(e['model_only_images_per_second'])}", "", ""))
    for row in result.get("precision_layout", []):
        if row["error"]:
            rows.append((f"train {row['config']}", "error", "", row["error"][:60]))
            continue
        rows.append((f"train {row['config']} img/s (x fp32; warm-up s; peak RSS MB)",
                     f"{_fmt(row['images_per_second'])} (x{_fmt(row['speedup_vs_fp32'])}; "
                     f"{_fmt(row['warmup_s'])}; {_fmt(row['peak_rss_mb'], 4)})", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for section, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {section}: {reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    _quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(args.max_minutes)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    result: dict[str, Any] = {"schema": 1, "date": _dt.date.today().isoformat(), "machine": machine_info(),
                              "settings": {k: v for k, v in vars(args).items() if k != "worker"},
                              "skipped": {}, "targets": {}, "timings_s": {}}
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
            except Exception as err:  # noqa: BLE001 - one broken section must not lose the others
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
        result["targets"]["framework_overhead_ratio"] = _met("framework_overhead_ratio",
                                                             result["framework_overhead_ratio"])
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
