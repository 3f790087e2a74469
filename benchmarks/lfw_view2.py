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

``files`` and ``pack_warm`` alternate for ``--view2-rounds`` rounds (a run is a minute on 2 cores, and the
machine's speed drifts by a tenth between minutes); each reports wall seconds, crops/s (each with its
mirror), ``in_network`` (the share of the run's wall time inside the network's calls, which drift does not
skew) and the accuracy, which must be one number for all runs, since they embed the same pixels.
``warm_vs_files`` is the median of the rounds' time ratios.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Budget, TimedNetwork, build_model, compose, median, model_overrides

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


def _evaluate(embedder, eval_overrides: list[str], batch: int, pixel_cache: Path | None) -> dict[str, Any]:
    """One ``score_checkpoint`` of the set, timed; ``embedder.net`` is a :class:`TimedNetwork`."""
    from stn_face.evaluation.scoring import build_eval_set, score_checkpoint

    eval_set = build_eval_set(compose(eval_overrides, config_name="evaluate").eval)
    embedder.net.seconds = 0.0
    start = time.perf_counter()
    metrics, _ = score_checkpoint(eval_set, None, embedder=embedder, batch_size=batch, progress=False,
                                  pixel_cache=pixel_cache)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "crops_per_second": len(eval_set.items) / seconds,
            "in_network": embedder.net.seconds / seconds, "accuracy": metrics["accuracy_mean"],
            "pairs": metrics["n_pairs"], "crops": len(eval_set.items)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One kind of run over its rounds: the median of each measured figure, the counts, every run's seconds."""
    first = rows[0]
    medians = {key: median([r[key] for r in rows]) if isinstance(value, float) else value
               for key, value in first.items()}
    return {**medians, "rounds_seconds": [r["seconds"] for r in rows]}


def bench_lfw_view2(args, budget: Budget) -> dict[str, Any]:
    eval_overrides = ["eval=lfw"] + ([f"eval.max_pairs_per_fold={args.view2_pairs_per_fold}"]
                                     if args.view2_pairs_per_fold else [])
    result: dict[str, Any] = {"backbones": {}, "skipped": {}}
    for backbone in [b.strip() for b in args.view2_backbones.split(",") if b.strip()]:
        if budget.reserved(0.1):
            result["skipped"][backbone] = "time budget spent"
            continue
        embedder = _embedder(backbone)
        embedder.net = TimedNetwork(embedder.net)
        runs: dict[str, list[dict[str, Any]]] = {run: [] for run in RUNS}
        with tempfile.TemporaryDirectory(prefix="stn-face-pixels-") as packs:
            common, pack = (embedder, eval_overrides, args.view2_batch), Path(packs)
            _evaluate(*common, pack)  # crops prepared (or found cached) and the pack written: not timed
            for file in pack.iterdir():
                file.unlink()
            runs["pack_cold"].append(_evaluate(*common, pack))
            for _ in range(max(args.view2_rounds, 1)):  # files and pack alternate, so drift hits both alike
                runs["files"].append(_evaluate(*common, None))
                runs["pack_warm"].append(_evaluate(*common, pack))
        summary: dict[str, Any] = {run: _summary(rows) for run, rows in runs.items()}
        summary["accuracies"] = sorted({r["accuracy"] for rows in runs.values() for r in rows})
        result["backbones"][backbone] = {
            **summary, "image_size": embedder.image_size, "batch_size": args.view2_batch,
            "warm_vs_files": median([f["seconds"] / w["seconds"] for f, w in zip(runs["files"], runs["pack_warm"])])}
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = ["LFW View 2 evaluation (score_checkpoint), wall seconds / crops per second / accuracy:"]
    for name, b in result["backbones"].items():
        parts = ", ".join(f"{run} {b[run]['seconds']:.1f} s ({b[run]['crops_per_second']:.0f} crops/s, "
                          f"{b[run]['in_network']:.0%} in the network)" for run in RUNS)
        lines.append(f"  {name} ({b['image_size']} px, {b[RUNS[0]]['pairs']} pairs, {b[RUNS[0]]['crops']} crops): "
                     f"{parts}; accuracy {', '.join(f'{a:.2%}' for a in b['accuracies'])}; from the pack "
                     f"{b['warm_vs_files']:.2f}x as fast as from files (median of the rounds' ratios)")
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name}: {reason}")
    return lines
