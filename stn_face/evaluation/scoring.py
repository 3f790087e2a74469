"""Score a model on a verification set: from a checkpoint (crop, embed, score) or from any model's
precomputed embeddings (an ``.npz`` of ``names`` and ``embeddings``).

``ckpt``: the eval set's images are cropped like the training images (cached), embedded with
:class:`~stn_face.embedder.FaceEmbedder` (flip-summed) and scored. ``embeddings``: names are paths
relative to the eval set's image root (e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``; for YTF frame
paths ``Person/1/1.2.jpg`` or video names ``Person/1``), scored as given (flip-summing is the
producer's business). The protocol is :func:`set_metrics`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stn_face.errors import InputError, MissingInputError
from stn_face.evaluation.verification import ScoredPairs, evaluate_verification, l2_normalize

log = logging.getLogger(__name__)


class MissingEmbeddingsError(InputError):
    """Images named by the pair file have no embedding in the given file."""


# ------------------------------------------------------------------------------ scoring a set
def set_metrics(eval_set: Any, features: np.ndarray) -> tuple[dict[str, Any], ScoredPairs]:
    """Score one :class:`~stn_face.data.eval_sets.VerificationSet` from per-item features ``(N, D)``.

    Items are averaged per group (a YTF video: re-normalised mean of its normalised frame features;
    an LFW image is a group of one), then pairs are scored by cosine similarity under the 10-fold
    protocol. Returns the metrics dict and the :class:`ScoredPairs` (their ``roc()`` is the ROC).
    """
    features = l2_normalize(np.asarray(features, dtype=np.float64))
    groups = np.zeros((len(eval_set.groups), features.shape[1]))
    np.add.at(groups, eval_set.item_group, features)
    groups = l2_normalize(groups)
    pairs, labels, folds = eval_set.pair_indices()
    scores = np.sum(groups[pairs[:, 0]] * groups[pairs[:, 1]], axis=1)
    # Float sums differ in the last bits between batchings and devices; rounding makes a 1-process
    # and a multi-process evaluation score the very same pairs the same way.
    scores = np.round(scores, 6)
    metrics = evaluate_verification(scores, labels, folds)
    metrics["skipped_pairs"] = int(getattr(eval_set, "skipped_pairs", 0))
    # what was scored, so a result file says it without the config: the set, its pair file and any limit
    metrics["eval"] = getattr(eval_set, "name", None)
    pairs_file = getattr(eval_set, "pairs_file", None)
    metrics["pairs_file"] = None if pairs_file is None else str(pairs_file)
    metrics["max_pairs_per_fold"] = getattr(eval_set, "max_pairs_per_fold", None)
    # people the model was trained on (None: not checked, e.g. embeddings of an unknown model)
    overlap = getattr(eval_set, "pairs_with_training_identities", None)
    metrics["pairs_with_training_identities"] = overlap
    metrics["excluded_pairs"] = int(getattr(eval_set, "excluded_pairs", 0))
    metrics["identity_overlap_allowed"] = bool(overlap and not metrics["excluded_pairs"])
    return metrics, ScoredPairs(scores, labels, np.asarray(folds).ravel())


# ------------------------------------------------------------------------------------ eval sets
def build_eval_set(eval_cfg: DictConfig | dict[str, Any]):
    """The :class:`VerificationSet` of an ``eval`` config; ``pairs`` is an alias of ``pairs_file``."""
    from hydra.utils import instantiate

    options = OmegaConf.to_container(eval_cfg, resolve=True) if not isinstance(eval_cfg, dict) else dict(eval_cfg)
    pairs = options.pop("pairs", None)
    if pairs:
        options["pairs_file"] = str(pairs)
    pairs_file = Path(str(options.get("pairs_file") or "")).expanduser()
    if not pairs_file.is_file() and not pairs:
        from stn_face.paths import HOW_TO_GET_DATA, data_root

        if data_root(required=False) is None:  # the data root itself is missing, not this one file
            raise MissingInputError(f"pair file not found: {pairs_file}: the face data was not found. {HOW_TO_GET_DATA}")
    if not pairs_file.is_file() and options.get("protocol") == "bin":
        given = f"{options['pairs_file']} does not exist; " if options.get("pairs_file") else ""
        raise MissingInputError(f"{given}eval=bin needs eval.path=FILE.bin, an insightface verification .bin such as "
                                "lfw.bin (`stn-face-pack bin` makes one from a pair file and images)")
    if not pairs_file.is_file():
        raise MissingInputError(f"pair file not found: {pairs_file}; pass eval.pairs=PATH (an LFW pairs.txt or "
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
        raise MissingInputError(f"embeddings file not found: {path}; pass embeddings=FILE.npz (from stn-face-embed "
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


def score_checkpoint(eval_set, ckpt: str | Path, device: str = "cpu", crop: dict[str, Any] | None = None,
                     batch_size: int = 64, flip: bool = True, prepare_workers: int = 2,
                     progress: bool = True) -> tuple[dict[str, Any], ScoredPairs]:
    """Crop (cached), embed and score ``eval_set`` with a checkpoint; ``crop=None``: the model's own
    crop settings. Returns ``(metrics, ScoredPairs)``; metrics name the checkpoint and its step."""
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
    embedder = FaceEmbedder.from_checkpoint(ckpt, device=device)
    eval_set.check_training_identities(embedder.class_names)
    eval_set.prepare(crop or embedder.crop_settings, workers=prepare_workers, progress=progress)
    eval_set.resolve()
    features = embedder.embed_files(eval_set.items, batch_size=batch_size, progress=progress, flip=flip)
    metrics, pairs = set_metrics(eval_set, features)
    metrics.update({"ckpt": str(embedder.checkpoint_path), "step": embedder.step, "flip": flip})
    return metrics, pairs


def score_embeddings(eval_set, embeddings_file: str | Path) -> tuple[dict[str, Any], ScoredPairs]:
    """Score ``eval_set`` from an ``.npz`` of ``names`` and ``embeddings``; returns ``(metrics, ScoredPairs)``."""
    names, embeddings = load_embeddings(embeddings_file)
    features = attach_embeddings(eval_set, names, embeddings, str(embeddings_file))
    metrics, pairs = set_metrics(eval_set, features)
    metrics["embeddings"] = str(Path(embeddings_file).expanduser().resolve())
    return metrics, pairs
