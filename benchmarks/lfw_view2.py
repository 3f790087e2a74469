"""Section ``lfw_view2``: the real LFW View 2 evaluation, timed end to end from the JPEG crops and from
their pixel pack.

:func:`~stn_face.evaluation.scoring.score_checkpoint` (what ``stn-face-eval`` runs) on all 6,000 pairs of
``eval=lfw`` and the 7,701 crops they need (MTCNN crops prepared once and cached, as the command does; the
first preparation is done before the clock starts), for each backbone of ``--view2-backbones``:
``dlib_resnet`` pretrained (no transformer; its accuracy on these 1.3x crops checks that the features are
right) and ``small``'s default model untrained (speed only). Three runs each, one after another:

- ``files``: every JPEG decoded (``pixel_cache=None``, ``stn-face-eval pixel_cache=false``);
- ``pack_cold``: decoding the crops into a new pixel pack, then embedding from it (the first
  ``stn-face-eval`` on these crops);
- ``pack_warm``: the pack read (every later one).

Each run reports wall seconds, crops/s (each with its mirror) and the accuracy; the three must agree to the
last digit, since they embed the same pixels.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Budget, build_model, compose, model_overrides

RUNS = ("files", "pack_cold", "pack_warm")


def _embedder(backbone: str):
    from omegaconf import OmegaConf

    from stn_face.embedder import FaceEmbedder
    from stn_face.nn.embedding import EmbeddingNet

    if backbone == "dlib_resnet":  # the pretrained network alone, as stn-face-eval backbone=dlib_resnet
        config = compose([f"backbone={backbone}"], config_name="evaluate").backbone
        return FaceEmbedder.from_pretrained(OmegaConf.to_container(config, resolve=True))
    model, cfg = build_model(model_overrides(backbone), 100)
    model.eval()
    config = {"backbone": OmegaConf.to_container(cfg.backbone, resolve=True)}  # the results name it
    return FaceEmbedder(EmbeddingNet(model.transformer, model.backbone), image_size=int(cfg.data.image_size),
                        config=config)


def bench_lfw_view2(args, budget: Budget) -> dict[str, Any]:
    from stn_face.evaluation.scoring import build_eval_set, score_checkpoint

    eval_overrides = ["eval=lfw"] + ([f"eval.max_pairs_per_fold={args.view2_pairs_per_fold}"]
                                     if args.view2_pairs_per_fold else [])
    result: dict[str, Any] = {"backbones": {}, "skipped": {}}
    for backbone in [b.strip() for b in args.view2_backbones.split(",") if b.strip()]:
        if budget.reserved(0.1):
            result["skipped"][backbone] = "time budget spent"
            continue
        embedder = _embedder(backbone)
        runs: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="stn-face-pixels-") as packs:
            for run in ("prepare", *RUNS):
                eval_set = build_eval_set(compose(eval_overrides, config_name="evaluate").eval)
                start = time.perf_counter()
                metrics, _ = score_checkpoint(eval_set, None, embedder=embedder, batch_size=args.view2_batch,
                                              progress=False, pixel_cache=None if run == "files" else Path(packs))
                seconds = time.perf_counter() - start
                if run == "prepare":  # crops prepared (or found cached), the pack written: not timed
                    for pack in Path(packs).iterdir():
                        pack.unlink()
                    continue
                crops = len(eval_set.items)
                runs[run] = {"seconds": seconds, "crops_per_second": crops / seconds,
                             "accuracy": metrics["accuracy_mean"], "pairs": metrics["n_pairs"], "crops": crops}
        result["backbones"][backbone] = {**runs, "image_size": embedder.image_size,
                                         "batch_size": args.view2_batch,
                                         "warm_vs_files": runs["files"]["seconds"] / runs["pack_warm"]["seconds"]}
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = ["LFW View 2 evaluation (score_checkpoint), wall seconds / crops per second / accuracy:"]
    for name, b in result["backbones"].items():
        parts = ", ".join(f"{run} {b[run]['seconds']:.1f} s ({b[run]['crops_per_second']:.0f} crops/s, "
                          f"{b[run]['accuracy']:.2%})" for run in RUNS)
        lines.append(f"  {name} ({b['image_size']} px, {b[RUNS[0]]['pairs']} pairs, {b[RUNS[0]]['crops']} crops): "
                     f"{parts}; from the pack {b['warm_vs_files']:.2f}x as fast as from files")
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name}: {reason}")
    return lines
