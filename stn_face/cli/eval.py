"""``stn-face-eval``: verification metrics of a trained model, or of any model's precomputed embeddings.

Examples::

    stn-face-eval ckpt=logs/train/runs/.../checkpoints/last.ckpt eval=lfw
    stn-face-eval ckpt=last.ckpt eval=ytf eval.allow_missing=true
    stn-face-eval embeddings=lfw.npz eval=lfw eval.pairs=$STN_FACE_DATA/lfw/pairs.txt
    stn-face-eval backbone=dlib_resnet eval=lfw      # a pretrained network alone, no checkpoint
    stn-face-eval ckpt=last.ckpt eval=bin eval.bin_dir=DIR +eval@extra_eval.ijbc=ijb extra_eval.ijbc.root=IJB_release
                                                     # several sets: one row in the papers' format

Scoring is :mod:`stn_face.evaluation.scoring`; ``metrics.json`` (the layout of
:mod:`stn_face.evaluation.artifacts`), ``roc_<set>.npz`` and ``roc_<set>.png`` (with the published LFW
curves for LFW) go into the Hydra run folder, and a table is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_face.cli.entry import hydra_command, run_module
from stn_face.errors import InputError

USAGE = ("usage: stn-face-eval ckpt=PATH eval=lfw|ytf   or   stn-face-eval embeddings=FILE.npz eval=lfw "
         "[eval.pairs=PAIRS_FILE]   or   stn-face-eval backbone=dlib_resnet eval=lfw")


@hydra_command("evaluate")
def main(cfg) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from stn_face.evaluation.artifacts import format_table, run_record, write_metrics, write_roc
    from stn_face.evaluation.scoring import build_eval_set, score_checkpoint, score_embeddings
    from stn_face.paths import resolve_checkpoint

    ckpt, embeddings_file, pretrained = cfg.get("ckpt"), cfg.get("embeddings"), cfg.get("backbone")
    given = sum(bool(x) for x in (ckpt, embeddings_file, pretrained))
    if given != 1:
        raise InputError(("give one of ckpt=PATH, embeddings=FILE.npz or backbone=NAME; " if given else
                          "missing ckpt=PATH, embeddings=FILE.npz or backbone=NAME; ") + USAGE)
    eval_configs = [cfg.eval, *(cfg.get("extra_eval") or {}).values()]  # +eval@extra_eval.NAME=OPTION adds a set
    from stn_face.data.eval_sets import expand_eval_configs

    eval_sets = [build_eval_set(c) for c in expand_eval_configs(eval_configs)]
    crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") else None
    embedder = None
    if pretrained:  # a pretrained network alone (backbone=dlib_resnet): no checkpoint, no transformer
        from stn_face.embedder import FaceEmbedder

        embedder = FaceEmbedder.from_pretrained(OmegaConf.to_container(pretrained, resolve=True), device=cfg.device)
    elif ckpt and len(eval_sets) > 1:  # load once for all sets
        from stn_face.embedder import FaceEmbedder

        embedder = FaceEmbedder.from_checkpoint(resolve_checkpoint(ckpt), device=cfg.device,
                                                trust=bool(cfg.get("trust_checkpoint")))
    out = Path(cfg.paths.output_dir)
    scored, written = {}, []
    for eval_set in eval_sets:
        if ckpt or pretrained:
            metrics, pairs = score_checkpoint(eval_set, resolve_checkpoint(ckpt) if embedder is None else None,
                                              device=cfg.device, crop=crop, batch_size=int(cfg.batch_size),
                                              flip=bool(cfg.flip), prepare_workers=int(cfg.prepare_workers),
                                              progress=bool(cfg.progress), trust=bool(cfg.get("trust_checkpoint")),
                                              embedder=embedder, pixel_cache=_pixel_cache(cfg.get("pixel_cache", True)))
        else:
            metrics, pairs = score_embeddings(eval_set, embeddings_file)
        scored[eval_set.name] = metrics
        written += write_roc(out, eval_set.name, pairs, metrics, log_fpr=bool(cfg.log_fpr),
                             published_roc_dir=cfg.get("published_roc_dir"))
        print(format_table(metrics), flush=True)
    record = run_record("eval", scored, list(scored))
    written.insert(0, write_metrics(out, record))
    if len(scored) > 1:
        from stn_face.evaluation.paper_table import paper_table

        print(paper_table(scored, label=Path(str(ckpt or embeddings_file or "pretrained")).name), flush=True)
    print(f"written: {', '.join(p.name for p in written)} in {out}", flush=True)
    return record


def _pixel_cache(value: Any) -> Path | None:
    """``pixel_cache``: true -> ``<cache>/pixels``, false/null -> no pack, a path -> that folder."""
    from stn_face.data.pixel_pack import pack_folder

    if value is True:
        return pack_folder()
    return Path(str(value)).expanduser() if value else None


if __name__ == "__main__":
    run_module(main)
