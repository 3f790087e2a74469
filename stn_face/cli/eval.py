"""``stn-face-eval``: verification metrics of a trained model, or of any model's precomputed embeddings.

Examples::

    stn-face-eval ckpt=logs/train/runs/.../checkpoints/last.ckpt eval=lfw
    stn-face-eval ckpt=last.ckpt eval=ytf eval.allow_missing=true
    stn-face-eval embeddings=lfw.npz eval=lfw eval.pairs=$STN_FACE_DATA/lfw/pairs.txt

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
         "[eval.pairs=PAIRS_FILE]")


@hydra_command("evaluate")
def main(cfg) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from stn_face.evaluation.artifacts import format_table, run_record, write_metrics, write_roc
    from stn_face.evaluation.scoring import build_eval_set, score_checkpoint, score_embeddings
    from stn_face.paths import resolve_checkpoint

    ckpt, embeddings_file = cfg.get("ckpt"), cfg.get("embeddings")
    if bool(ckpt) == bool(embeddings_file):
        raise InputError(("give either ckpt=PATH or embeddings=FILE.npz, not both; " if ckpt else
                          "missing ckpt=PATH or embeddings=FILE.npz; ") + USAGE)
    eval_set = build_eval_set(cfg.eval)
    if ckpt:
        crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") else None
        metrics, pairs = score_checkpoint(eval_set, resolve_checkpoint(ckpt), device=cfg.device, crop=crop,
                                               batch_size=int(cfg.batch_size), flip=bool(cfg.flip),
                                               prepare_workers=int(cfg.prepare_workers),
                                               progress=bool(cfg.progress))
    else:
        metrics, pairs = score_embeddings(eval_set, embeddings_file)
    record = run_record("eval", {eval_set.name: metrics}, [eval_set.name])
    out = Path(cfg.paths.output_dir)
    written = [write_metrics(out, record)]
    written += write_roc(out, eval_set.name, pairs, metrics, log_fpr=bool(cfg.log_fpr),
                         published_roc_dir=cfg.get("published_roc_dir"))
    print(format_table(metrics), flush=True)
    print(f"written: {', '.join(p.name for p in written)} in {out}", flush=True)
    return record


if __name__ == "__main__":
    run_module(main)
