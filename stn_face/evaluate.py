"""``stn-face-eval``: verification metrics of a trained model, or of any model's precomputed embeddings.

Examples::

    stn-face-eval ckpt=logs/train/runs/.../checkpoints/last.ckpt eval=lfw
    stn-face-eval ckpt=last.ckpt eval=ytf eval.allow_missing=true
    stn-face-eval embeddings=lfw.npz eval=lfw eval.pairs=$STN_FACE_DATA/lfw/pairs.txt

``ckpt=``: the eval set's images are cropped like the training images (cached), embedded with
:class:`~stn_face.embedder.FaceEmbedder` (flip-summed) and scored. ``embeddings=``: an ``.npz`` with
``names`` (paths relative to the eval set's image root, e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``;
for YTF frame paths ``Person/1/1.2.jpg`` or video names ``Person/1``) and ``embeddings`` (N x D);
scored as given (flip-summing is the producer's business). Both write ``metrics.json`` (the keys of
:func:`stn_face.evaluation.verification.evaluate_verification`), ``roc_<set>.npz`` and
``roc_<set>.png`` (with the published LFW curves for LFW) into the Hydra run folder, and print a table.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from stn_face.config import CONF_DIR
from stn_face.errors import InputError, friendly_errors

log = logging.getLogger("stn_face.evaluate")

USAGE = ("usage: stn-face-eval ckpt=PATH eval=lfw|ytf   or   stn-face-eval embeddings=FILE.npz eval=lfw "
         "[eval.pairs=PAIRS_FILE]")


class MissingEmbeddingsError(InputError):
    """Images named by the pair file have no embedding in the given file."""


# ------------------------------------------------------------------------------------ eval sets
def build_eval_set(eval_cfg: DictConfig | dict[str, Any]):
    """The :class:`VerificationSet` of an ``eval`` config; ``pairs`` is an alias of ``pairs_file``."""
    from hydra.utils import instantiate

    options = OmegaConf.to_container(eval_cfg, resolve=True) if not isinstance(eval_cfg, dict) else dict(eval_cfg)
    pairs = options.pop("pairs", None)
    if pairs:
        options["pairs_file"] = str(pairs)
    pairs_file = Path(str(options.get("pairs_file") or "")).expanduser()
    if not pairs_file.is_file():
        raise FileNotFoundError(f"pair file not found: {pairs_file}; pass eval.pairs=PATH (an LFW pairs.txt or "
                                "a YTF splits.txt)")
    options["pairs_file"] = str(pairs_file)
    return instantiate(options)


def read_set_pairs(eval_set) -> list:
    """The pairs of ``eval_set``'s file, limited to ``max_pairs_per_fold`` like :meth:`VerificationSet.load`."""
    from stn_face.data.eval_sets import _first_per_fold
    from stn_face.data.protocols import read_lfw_pairs, read_ytf_splits

    reader = read_ytf_splits if eval_set.protocol == "ytf" else read_lfw_pairs
    pairs = reader(eval_set.pairs_file)
    if eval_set.max_pairs_per_fold is not None:
        pairs = _first_per_fold(pairs, eval_set.max_pairs_per_fold)
    return pairs


def _clean_name(name: str) -> str:
    name = str(name).replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def attach_embeddings(eval_set, names: list[str], embeddings: np.ndarray, source: str) -> np.ndarray:
    """Fill ``eval_set`` (pairs, groups, item_group) from precomputed embeddings; return the item features.

    A group (an LFW image, a YTF video) takes every row whose name is the group itself or lies below it
    (``Person/1/frame.jpg`` for the video ``Person/1``). Pairs with a group that has no row are an error
    naming how many and the first few, or skipped with ``allow_missing``.
    """
    from stn_face.data.protocols import unique_images

    pairs = read_set_pairs(eval_set)
    rows: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        name = _clean_name(name)
        rows.setdefault(name, []).append(index)
        if eval_set.protocol == "ytf" and "/" in name:  # a frame also counts for its video folder
            rows.setdefault(name.rsplit("/", 1)[0], []).append(index)
    wanted = unique_images(pairs)
    missing = [group for group in wanted if group not in rows]
    if missing and not eval_set.allow_missing:
        noun = "videos" if eval_set.protocol == "ytf" else "images"
        raise MissingEmbeddingsError(
            f"{len(missing)} of {len(wanted)} {noun} named by {eval_set.pairs_file} have no embedding in {source} "
            f"(first: {', '.join(missing[:3])}); names must be paths relative to the image root, like "
            f"{wanted[0]}; or pass eval.allow_missing=true to score only the pairs present")
    if missing:
        absent = set(missing)
        kept = [p for p in pairs if p.left not in absent and p.right not in absent]
        eval_set.skipped_pairs = len(pairs) - len(kept)
        log.warning("%s: %d of %d pairs skipped because %d images have no embedding", eval_set.name,
                    eval_set.skipped_pairs, len(pairs), len(missing))
        pairs = kept
    if not pairs:
        raise MissingEmbeddingsError(f"no pair of {eval_set.pairs_file} can be scored from {source}")
    indices = eval_set.set_pairs(pairs, rows.__getitem__)
    return embeddings[np.asarray(indices, dtype=np.int64)]


def load_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``names`` and ``embeddings`` of an ``.npz`` file, checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}; pass embeddings=FILE.npz (from stn-face-embed "
                                "or any model: arrays `names` and `embeddings`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "names" not in data or "embeddings" not in data:
                raise InputError(f"{path} must hold the arrays `names` (N paths relative to the image root) and "
                                 f"`embeddings` (N x D); it holds {sorted(data.files)}")
            names = [str(n) for n in data["names"].tolist()]
            embeddings = np.asarray(data["embeddings"], dtype=np.float64)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - not an npz, pickled objects, ...
        raise InputError(f"cannot read {path} as an .npz of `names` and `embeddings` ({error})") from None
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise InputError(f"{path}: `embeddings` must be N x D with one row per name; got shape "
                         f"{embeddings.shape} for {len(names)} names")
    if not np.isfinite(embeddings).all():
        raise InputError(f"{path}: `embeddings` holds NaN or infinite values")
    return names, embeddings


# ----------------------------------------------------------------------------------------- run
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt, embeddings_file = cfg.get("ckpt"), cfg.get("embeddings")
    if bool(ckpt) == bool(embeddings_file):
        raise InputError(("give either ckpt=PATH or embeddings=FILE.npz, not both; " if ckpt else
                          "missing ckpt=PATH or embeddings=FILE.npz; ") + USAGE)
    eval_set = build_eval_set(cfg.eval)
    if ckpt:
        from stn_face.cli_utils import resolve_checkpoint_path

        ckpt = resolve_checkpoint_path(ckpt)
        from stn_face.data.protocols import MissingImagesError

        try:
            eval_set.load()  # missing images / videos fail here, before the model is loaded
        except MissingImagesError as error:
            first = str(error).split(" To fix:")[0]
            raise InputError(f"{eval_set.name}: {first} Pass eval.allow_missing=true to score only the pairs "
                             "whose images/videos exist, or point eval.image_root at the full set.") from None
        except ValueError as error:  # nothing left to score
            raise InputError(str(error)) from None
        from stn_face.embedder import FaceEmbedder

        embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device)
        crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") else embedder.crop_settings
        eval_set.prepare(crop, workers=int(cfg.prepare_workers), progress=bool(cfg.progress))
        eval_set.resolve()
        features = embedder.embed_files(eval_set.items, batch_size=int(cfg.batch_size), progress=bool(cfg.progress),
                                        flip=bool(cfg.flip))
        source = {"ckpt": str(embedder.checkpoint_path), "flip": bool(cfg.flip)}
    else:
        names, embeddings = load_embeddings(embeddings_file)
        features = attach_embeddings(eval_set, names, embeddings, str(embeddings_file))
        source = {"embeddings": str(Path(embeddings_file).expanduser().resolve())}
    from stn_face.evaluation.verification import set_metrics

    metrics, (fpr, tpr) = set_metrics(eval_set, features)
    metrics.update({"eval": eval_set.name, "pairs_file": str(eval_set.pairs_file), **source})
    write_outputs(cfg, eval_set, metrics, fpr, tpr)
    return metrics


def write_outputs(cfg: DictConfig, eval_set, metrics: dict[str, Any], fpr: np.ndarray, tpr: np.ndarray) -> None:
    from stn_face.evaluation.verification import save_roc_npz

    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    written = ["metrics.json"]
    if fpr.size:
        save_roc_npz(out / f"roc_{eval_set.name}.npz", fpr, tpr)
        from stn_face.evaluation.plots import load_published_rocs, plot_roc

        published = None
        roc_dir = cfg.get("published_roc_dir")
        if eval_set.name.startswith("lfw") and roc_dir and Path(str(roc_dir)).is_dir():
            published = load_published_rocs(roc_dir)
        label = f"{eval_set.name} (acc {100 * metrics['accuracy_mean']:.2f}%, AUC {metrics['auc']:.4f})"
        plot_roc({label: (fpr, tpr)}, out / f"roc_{eval_set.name}.png", log_fpr=bool(cfg.log_fpr),
                 published=published, title=f"{eval_set.name} ROC")
        written += [f"roc_{eval_set.name}.npz", f"roc_{eval_set.name}.png"]
    print(format_table(metrics), flush=True)
    print(f"written: {', '.join(written)} in {out}", flush=True)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f} %"


def format_table(metrics: dict[str, Any]) -> str:
    n_pairs, skipped = metrics.get("n_pairs"), metrics.get("skipped_pairs", 0)
    rows = [
        ("eval set", (f"{metrics.get('eval')} ({Path(str(metrics.get('pairs_file'))).name}: {n_pairs} pairs, "
                      f"{metrics.get('n_same')} same / {metrics.get('n_diff')} different)")),
        ("accuracy", f"{_pct(metrics.get('accuracy_mean'))} ± {_pct(metrics.get('accuracy_std'))}"),
        ("AUC", "n/a (one class only)" if metrics.get("auc") is None else f"{metrics['auc']:.4f}"),
        ("EER", "n/a (one class only)" if metrics.get("eer") is None else _pct(metrics["eer"])),
    ]
    for far, tar in (metrics.get("tar_at_far") or {}).items():
        rows.append((f"TAR@FAR={far}", _pct(tar)))
    if metrics.get("best_threshold") is not None:
        rows.append(("best threshold", f"{metrics['best_threshold']:.4f}"))
    if skipped:
        rows.append(("skipped pairs", f"{skipped} of {skipped + (n_pairs or 0)} (images/videos missing)"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    with friendly_errors():
        metrics = evaluate(cfg)
    return metrics.get("accuracy_mean")


if __name__ == "__main__":
    main()
