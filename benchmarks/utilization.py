"""Section ``mfu``: how much of this CPU's arithmetic the model uses (model FLOPs utilisation).

Three ceilings, all from this machine in this run:

- ``peak``: cores x FMA units x fp32 lanes per FMA x 2 FLOPs x clock, read from ``/proc/cpuinfo``
  (cores: the CPUs this process may run on; clock: the ``cpu MHz`` line, or ``cpufreq``'s maximum where
  it exists; lanes: 16 for a 512-bit FMA datapath, 8 for 256-bit). Two FMA units per core (every x86
  server core since Haswell / Zen 1). AMD before Zen 5 (family 0x19 and older) runs AVX-512 on 256-bit
  units, so its lanes stay 8; Zen 5 (family 0x1A) and Intel's AVX-512 server cores have 512-bit FMAs.
  :func:`cpu_peak` returns the derivation with the number.
- ``gemm``: the best fp32 ``torch.mm`` of 2048 x 2048 matrices reaches (the BLAS's practical ceiling);
- ``conv``: the best of a ResNet-like 3x3 convolution, 64 -> 64 channels at 56 x 56, batch 32 (oneDNN's).

Model FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add, on
convolutions and matrix products) for one batch of: the training step (forward and backward of
``StnFaceModule.training_loss``: transformer, backbone, head; with ``model.freeze_backbone`` the
backbone's weight gradients are not computed and not counted), the bare forward pass
(``inference_mode``), and the evaluation pipeline (``FaceEmbedder.embed_files`` on LFW crop files at the
same batch size, after a warm-up call, each image with its mirror: twice the forward FLOPs per crop). The
pipeline runs the network on 2 x batch images a call (the crops and their mirrors). ``eval_pipeline`` reads
the crops' pixels from their pixel pack (:mod:`stn_face.data.pixel_pack`: what every LFW evaluation after the
first does; ``pack_write_seconds`` is the one-off decoding), ``eval_pipeline_from_files`` decodes every JPEG
(the first evaluation, and ``stn-face-embed``). ``vs_forward`` compares a pipeline with the bare forward pass
on ready tensors of the same images, mirrors included, so what it measures is what reading, preprocessing,
mirroring and normalising cost; ``vs_forward_at_batch`` compares it with the forward pass at the batch size
of the MFU row. Forward passes and pipelines alternate round by round, and each ratio is the median of the
rounds' ratios; ``in_network`` is the share of a pipeline's wall time spent inside the network's calls
(timed around each), which a noisy neighbour cannot skew. ``mfu`` is achieved
FLOP/s over ``peak``; ``of_gemm`` over the GEMM ceiling.

``main_job``: the main job's training step (``stn-face-train`` with no options: its model, batch, number of
identities and the ``cpu`` trainer's precision) under today's defaults against the settings it had before
2026-12-05 (:data:`OLD_MAIN_JOB`: the full-width ``conv3_fc1`` localization net, eager, and bf16 autocast on
any CPU with AVX512-BF16), steps interleaved round by round on the same preloaded real crops; FLOPs of each
counted on its eager twin. ``mfu_ratio`` is today's MFU over the old settings'; ``new_eager`` is today's
defaults with ``model.compile=false`` (what compilation adds). ``mfu_ratio_paired`` is the median of each
round's own ratio (the two settings ran back to back in it, so a noisy neighbour slows both alike).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Budget, TimedNetwork, build_model, median, model_overrides
from stn_face.machine import cpu_flags, cpuinfo

#: backbone -> extra overrides it needs (dlib's network takes 150 x 150 chips and is used frozen)
BACKBONE_SETTINGS = {
    "dlib_resnet": ["data.image_size=160", "model.freeze_backbone=true"],
}

#: the main job's settings before 2026-12-05, as overrides of today's defaults; its precision came from
#: ``cpu_supports_fast_bf16``'s old rule (bf16 autocast on AVX512-BF16 or AMX)
OLD_MAIN_JOB = ["localization=conv3_fc1", "model.compile=false", "model.channels_last=false", "backbone.dropout=0.0"]
MAIN_JOB_CLASSES = 1184  # the LFW View 1 DevTrain identities with two or more photos


# ---------------------------------------------------------------------------------------- ceilings
def cpu_peak() -> dict[str, Any]:
    """The fp32 FMA peak of the CPUs this process may use, with how it was derived."""
    info = cpuinfo()
    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0))
    mhz, clock_source = float(info.get("cpu MHz", "0") or 0), "/proc/cpuinfo cpu MHz"
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        mhz, clock_source = int(max_freq.read_text()) / 1000.0, "cpufreq cpuinfo_max_freq"
    vendor, family = info.get("vendor_id", ""), int(info.get("cpu family", "0") or 0)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 0x1A):
        lanes, isa = 16, "AVX-512 on 512-bit FMA units"
    elif "avx512f" in flags:
        lanes, isa = 8, "AVX-512 executed on 256-bit FMA units (AMD before Zen 5)"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2 + FMA (256-bit)"
    else:
        lanes, isa = 4, "SSE (128-bit, no FMA assumed x2 units)"
    fma_units = 2
    gflops = cores * fma_units * lanes * 2 * mhz / 1000.0
    return {"gflops": gflops, "cores": cores, "mhz": mhz, "clock_source": clock_source, "fma_units": fma_units,
            "fp32_lanes": lanes, "isa": isa, "cpu": info.get("model name", ""), "cpu_family": family,
            "derivation": f"{cores} cores x {fma_units} FMA units x {lanes} fp32 lanes x 2 FLOPs x "
                          f"{mhz / 1000:.3f} GHz ({clock_source}; {isa}) = {gflops:.1f} GFLOP/s"}


def _best_rate(fn, flops: float, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return _best_rate(lambda: torch.mm(a, b), 2.0 * size**3, repeats)


def conv_gflops(batch: int = 32, channels: int = 64, side: int = 56, repeats: int = 5) -> float:
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
    x = torch.randn(batch, channels, side, side)
    flops = 2.0 * batch * channels * channels * 9 * side * side
    with torch.inference_mode():
        return _best_rate(lambda: conv(x), flops, repeats)


# ------------------------------------------------------------------------------------- the model
def counted_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _rate(fn, images: int) -> float:
    """Images per second of one call of ``fn`` that handles ``images`` images."""
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def _median_rate(fn, images: int, rounds: int) -> float:
    fn()  # warm-up
    return median([_rate(fn, images) for _ in range(rounds)])


def bench_backbone(backbone: str, crops: Path, batch: int, eval_images: int, rounds: int,
                   peak: float, gemm: float, eval_batches: tuple[int, ...] = ()) -> dict[str, Any]:
    """Training step, forward pass and evaluation pipeline of the default model with ``backbone``."""
    from stn_face.data.augment import eval_batch
    from stn_face.data.images import read_rgb
    from stn_face.embedder import FaceEmbedder
    from stn_face.nn.embedding import EmbeddingNet

    model, cfg = build_model(model_overrides(backbone) + BACKBONE_SETTINGS.get(backbone, []), 100)
    size = int(cfg.data.image_size)
    files = sorted(crops.glob("*/*.jpg"))[:eval_images]
    # the crops decoded and normalised beforehand, batch by batch: the first is the MFU rows' batch, all of
    # them (each with its mirrors) the bare forward pass's input beside the pipeline
    batches = [eval_batch([read_rgb(f) for f in files[i:i + batch]], size) for i in range(0, len(files), batch)]
    images = batches[0]
    labels = torch.arange(images.shape[0]) % 100
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step() -> None:
        model.train()
        loss, *_ = model.training_loss(images, labels, margin_factor=1.0, step=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model.embed(images)

    train_flops = counted_flops(train_step) / len(images)
    forward_flops = counted_flops(forward) / len(images)
    train_rate = _median_rate(train_step, len(images), rounds)
    embedder = FaceEmbedder(EmbeddingNet(model.transformer, model.backbone), image_size=size)
    embedder.net = network = TimedNetwork(embedder.net)
    model.eval()
    # the bare forward pass's input: the pipeline's very images, each batch with its mirrors (the pipeline
    # runs 2 x batch images a call); the forward pass at ``batch`` (the MFU row) is timed beside it
    ready = [torch.cat([chunk, chunk.flip(-1)]) for chunk in batches]

    def forward_pass() -> None:
        with torch.inference_mode():
            for doubled in ready:
                model.embed(doubled)

    def forward_at_batch() -> None:
        with torch.inference_mode():
            for _ in range(2 * len(ready)):
                model.embed(images)

    with tempfile.TemporaryDirectory() as pack_folder:
        def pipeline() -> None:  # an evaluation after the first: the crops' pixels come from their pack
            embedder.embed_files(files, batch_size=batch, progress=False, pixel_cache=pack_folder)

        def pipeline_from_files() -> None:  # every crop decoded from its JPEG (the first evaluation)
            embedder.embed_files(files, batch_size=batch, progress=False)

        start = time.perf_counter()
        pipeline()  # writes the pack: decoding once
        pack_seconds = time.perf_counter() - start
        forward_pass(), forward_at_batch(), pipeline_from_files()  # warm-up
        # the four alternate round by round over the same images, so a noisy neighbour slows them alike;
        # each ratio is the median of the rounds' own ratios. ``in_network`` is the share of a pipeline
        # call spent inside the network (timed around each call of it): the noise-free view of the same.
        forward_rates, at_batch_rates, pack_rates, file_rates, pack_share, file_share = ([] for _ in range(6))
        for _ in range(max(rounds, 1)):
            forward_rates.append(_rate(forward_pass, 2 * len(files)))
            at_batch_rates.append(_rate(forward_at_batch, 2 * len(ready) * len(images)))
            network.seconds = 0.0
            pack_rates.append(_rate(pipeline, len(files)))  # crops/s, each with its mirror
            pack_share.append(network.seconds * pack_rates[-1] / len(files))
            network.seconds = 0.0
            file_rates.append(_rate(pipeline_from_files, len(files)))
            file_share.append(network.seconds * file_rates[-1] / len(files))

    def row(rate: float, flops: float, forward_images: float = 1.0) -> dict[str, float]:
        achieved = rate * flops * forward_images / 1e9
        return {"images_per_second": rate, "gflop_per_image": flops * forward_images / 1e9,
                "gflops": achieved, "mfu": achieved / peak, "of_gemm": achieved / gemm}

    def pipeline_row(rates: list[float], share: list[float]) -> dict[str, Any]:
        rounds_vs_forward = [2 * e / f for e, f in zip(rates, forward_rates)]
        return {**row(median(rates), forward_flops, 2.0), "crops": len(files),
                "forward_images_per_second": 2 * median(rates), "vs_forward": median(rounds_vs_forward),
                "rounds_vs_forward": rounds_vs_forward,
                "vs_forward_at_batch": median([2 * e / f for e, f in zip(rates, at_batch_rates)]),
                "in_network": median(share)}

    sweep = {}
    for eval_batch_size in eval_batches:  # the evaluation pipeline's speed against its batch size
        embedder.embed_files(files[:eval_batch_size], batch_size=eval_batch_size, progress=False)
        start = time.perf_counter()
        embedder.embed_files(files, batch_size=eval_batch_size, progress=False)
        sweep[eval_batch_size] = len(files) / (time.perf_counter() - start)
    return {"backbone": backbone, "image_size": size, "batch_size": len(images),
            "eval_pipeline_crops_per_second_by_batch": sweep,
            "frozen_backbone": bool(cfg.model.get("freeze_backbone", False)),
            "train": row(train_rate, train_flops), "forward": row(median(at_batch_rates), forward_flops),
            "forward_pipeline_batch_images_per_second": median(forward_rates),
            "eval_pipeline": {**pipeline_row(pack_rates, pack_share), "pack_write_seconds": pack_seconds},
            "eval_pipeline_from_files": pipeline_row(file_rates, file_share)}


def old_main_job_precision() -> str:
    return "bf16-mixed" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "32-true"


def bench_main_job(crops: Path, batch: int, rounds: int, peak: float, gemm: float,
                   extra: list[str]) -> dict[str, Any]:
    """The main job's training step: today's defaults against :data:`OLD_MAIN_JOB`, interleaved."""
    from benchmarks.common import autocast, compose
    from stn_face.data.augment import eval_transform
    from stn_face.data.images import read_rgb

    common = ["logger=none", "model.margin_warmup_steps=0", *extra]
    cfg = compose(common)
    precision = str(cfg.trainer.precision)
    settings = {"old": (OLD_MAIN_JOB + common, old_main_job_precision()), "new": (common, precision),
                "new_eager": ([*common, "model.compile=false"], precision)}
    size, batch = int(cfg.data.image_size), batch or int(cfg.data.batch_size)
    files = sorted(crops.glob("*/*.jpg"))
    transform = eval_transform(size)
    images = torch.stack([transform(image=read_rgb(files[i % len(files)]))["image"] for i in range(batch)])
    labels = torch.arange(batch) % MAIN_JOB_CLASSES
    steps, rows = {}, {}
    for name, (overrides, precision) in settings.items():
        model, cfg = build_model(overrides, MAIN_JOB_CLASSES)
        eager, _ = build_model([*overrides, "model.compile=false"], MAIN_JOB_CLASSES)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(model=model, optimizer=optimizer, precision=precision) -> None:
            model.train()
            with autocast(precision):
                loss, *_ = model.training_loss(images, labels, margin_factor=1.0, step=0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def eager_step(model=eager, precision=precision) -> None:
            with autocast(precision):
                loss, *_ = model.training_loss(images, labels, margin_factor=1.0, step=0)
            loss.backward()

        start = time.perf_counter()
        step()  # compilation, when the settings compile
        first = time.perf_counter() - start
        step()
        steps[name] = (step, [])
        rows[name] = {"overrides": overrides, "precision": precision, "localization": [int(c) for c in cfg.localization.conv_channels]
                      if "conv_channels" in cfg.localization else None,
                      "compile": bool(cfg.model.compile), "channels_last": bool(cfg.model.channels_last),
                      "first_step_s": first, "gflop_per_image": counted_flops(eager_step) / batch / 1e9}
    for _ in range(max(rounds, 1)):
        for step, rates in steps.values():
            start = time.perf_counter()
            step()
            step()
            rates.append(2 * batch / (time.perf_counter() - start))
    for name, (_, rates) in steps.items():
        row = rows[name]
        rate = median(rates)
        achieved = rate * row["gflop_per_image"]
        row.update({"images_per_second": rate, "rounds_images_per_second": rates, "gflops": achieved,
                    "mfu": achieved / peak, "of_gemm": achieved / gemm})
    old, new = rows["old"], rows["new"]
    paired = [n * new["gflop_per_image"] / (o * old["gflop_per_image"])  # each round's own MFU ratio
              for n, o in zip(new["rounds_images_per_second"], old["rounds_images_per_second"])]
    return {"batch_size": batch, "image_size": size, "classes": MAIN_JOB_CLASSES, **rows,
            "images_ratio": new["images_per_second"] / old["images_per_second"],
            "mfu_ratio": new["mfu"] / old["mfu"], "mfu_ratio_paired": median(paired),
            "rounds_mfu_ratio": paired}


def bench_mfu(args, crops: Path, budget: Budget) -> dict[str, Any]:
    peak = cpu_peak()
    repeats = 2 if args.quick else 5
    gemm = gemm_gflops(512 if args.quick else 2048, repeats)
    conv = conv_gflops(4 if args.quick else 32, repeats=repeats)
    result: dict[str, Any] = {"peak": peak, "gemm_gflops": gemm, "conv_gflops": conv,
                              "gemm_mfu": gemm / peak["gflops"], "conv_mfu": conv / peak["gflops"],
                              "threads": torch.get_num_threads(), "backbones": {}, "skipped": {}}
    for backbone in [b.strip() for b in args.mfu_backbones.split(",") if b.strip()]:
        if budget.reserved(0.2):
            result["skipped"][backbone] = "time budget spent"
            continue
        try:
            result["backbones"][backbone] = bench_backbone(
                backbone, crops, args.mfu_batch, args.mfu_eval_images, args.rounds, peak["gflops"], gemm,
                tuple(int(b) for b in args.mfu_eval_batches.split(",") if b.strip()))
        except Exception as error:  # noqa: BLE001 - a backbone whose weights are absent is skipped, said why
            result["skipped"][backbone] = f"{type(error).__name__}: {error}"[:300]
    if args.mfu_main_rounds > 0 and not budget.reserved(0.1):
        extra = [o.strip() for o in args.mfu_main_overrides.split(",") if o.strip()]
        result["main_job"] = bench_main_job(crops, args.mfu_main_batch, args.mfu_main_rounds, peak["gflops"],
                                            gemm, extra)
    return result


def table(result: dict[str, Any]) -> str:
    """The section's printed block: the ceilings, then MFU per backbone and part."""
    peak = result["peak"]
    lines = [f"MFU (model FLOPs utilisation), {result['threads']} torch threads. Peak: {peak['derivation']}",
             f"  ceilings measured: GEMM {result['gemm_gflops']:.1f} GFLOP/s ({result['gemm_mfu']:.1%} of peak), "
             f"conv {result['conv_gflops']:.1f} GFLOP/s ({result['conv_mfu']:.1%})"]
    rows = [("backbone", "part", "img/s", "GFLOP/img", "GFLOP/s", "mfu", "of GEMM", "note")]
    for name, b in result["backbones"].items():
        label = f"{name} ({b['image_size']} px{', frozen' if b['frozen_backbone'] else ''})"
        for part in ("train", "forward", "eval_pipeline", "eval_pipeline_from_files"):
            r = b[part]
            note = (f"{r['vs_forward']:.2f}x the forward pass on its images ({r['vs_forward_at_batch']:.2f}x at "
                    f"batch {b['batch_size']}), {r['in_network']:.0%} of it in the network"
                    if part.startswith("eval_pipeline") else "")
            rows.append((label, part, f"{r['images_per_second']:.1f}", f"{r['gflop_per_image']:.3f}",
                         f"{r['gflops']:.1f}", f"{r['mfu']:.1%}", f"{r['of_gemm']:.1%}", note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append("  eval_pipeline: crops/s, each crop with its mirror (2 forward passes), pixels from the crops' pixel "
                 "pack (every evaluation after the first); eval_pipeline_from_files: every JPEG decoded")
    for name, b in result["backbones"].items():
        sweep = b.get("eval_pipeline_crops_per_second_by_batch") or {}
        if sweep:
            lines.append(f"  {name} evaluation pipeline, crops/s by batch size: "
                         + ", ".join(f"{k}: {v:.1f}" for k, v in sweep.items()))
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name}: {reason}")
    job = result.get("main_job")
    if job:
        lines.append(f"  main job's training step (batch {job['batch_size']}, {job['image_size']} px, "
                     f"{job['classes']} identities), interleaved:")
        for name in ("old", "new_eager", "new"):
            r = job[name]
            lines.append(f"    {name}: {r['images_per_second']:.1f} img/s, {r['gflop_per_image']:.3f} GFLOP/img, "
                         f"MFU {r['mfu']:.1%} ({r['precision']}, compile {r['compile']}, localization "
                         f"{r['localization']}, first step {r['first_step_s']:.1f} s)")
        lines.append(f"    today's defaults / old settings: {job['images_ratio']:.2f}x images/s, "
                     f"{job['mfu_ratio']:.2f}x MFU (median of the rounds' own ratios: "
                     f"{job['mfu_ratio_paired']:.2f}x)")
    return "\n".join(lines)
