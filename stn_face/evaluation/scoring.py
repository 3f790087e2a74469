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

from stn_face.data.eval_sets import (
    MissingEmbeddingsError,
    missing_file_hint,
    protocol_class,
    registered_protocols,
)
from stn_face.errors import InputError, MissingInputError
from stn_face.evaluation.verification import DEFAULT_FARS, ScoredPairs, evaluate_verification, l2_normalize
from stn_face.files import check_npz

__all__ = ["MissingEmbeddingsError", "attach_embeddings", "build_eval_set", "load_embeddings", "score_checkpoint",
           "score_embeddings", "set_metrics"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ scoring a set
def set_metrics(eval_set: Any, features: np.ndarray) -> tuple[dict[str, Any], ScoredPairs]:
    """Score one :class:`~stn_face.data.eval_sets.VerificationSet` from per-item features ``(N, D)``.

    Items are averaged per group (a YTF video: re-normalised mean of its normalised frame features;
    an LFW image is a group of one), then pairs are scored by cosine similarity under the 10-fold
    protocol. Returns the metrics dict and the :class:`ScoredPairs` (their ``roc()`` is the ROC).
    """
    features = l2_normalize(np.asarray(features, dtype=np.float64))
    groups = np.zeros((len(eval_set.groups), features.shape[1]))
    weights = eval_set.item_weights()  # None: each item counts once (a YTF video's frames)
    np.add.at(groups, eval_set.item_group, features if weights is None else features * weights[:, None])
    groups = l2_normalize(groups)
    pairs, labels, folds = eval_set.pair_indices()
    scores = np.sum(groups[pairs[:, 0]] * groups[pairs[:, 1]], axis=1)
    # Float sums differ in the last bits between batchings and devices; rounding makes a 1-process
    # and a multi-process evaluation score the very same pairs the same way.
    scores = np.round(scores, 6)
    metrics = evaluate_verification(scores, labels, folds, fars=eval_set.fars or DEFAULT_FARS)
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
    if str(options.get("protocol")) in registered_protocols():  # paths a protocol derives (eval=ijb: eval.root)
        options = protocol_class(str(options["protocol"])).resolve_options(options)
    pairs = options.pop("pairs", None)
    if pairs:
        options["pairs_file"] = str(pairs)
    pairs_file = Path(str(options.get("pairs_file") or "")).expanduser()
    if not pairs_file.is_file() and not pairs:
        from stn_face.paths import HOW_TO_GET_DATA, data_root

        if data_root(required=False) is None:  # the data root itself is missing, not this one file
            raise MissingInputError(f"pair file not found: {pairs_file}: the face data was not found. {HOW_TO_GET_DATA}")
    if not pairs_file.is_file():
        raise MissingInputError(missing_file_hint(options))
    options["pairs_file"] = str(pairs_file)
    return instantiate(options)


def attach_embeddings(eval_set, names: list[str], embeddings: np.ndarray, source: str) -> np.ndarray:
    """Fill ``eval_set`` (pairs, groups, item_group) from precomputed embeddings; return the item features
    (:meth:`~stn_face.data.eval_sets.VerificationSet.use_embeddings` says which rows a group takes)."""
    indices = eval_set.use_embeddings(names, source)
    return embeddings[np.asarray(indices, dtype=np.int64)]


def load_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``names`` and ``embeddings`` of an ``.npz`` file, checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"embeddings file not found: {path}; pass embeddings=FILE.npz (from stn-face-embed "
                                "or any model: arrays `names` and `embeddings`)")
    try:
        check_npz(path)  # a zip of plain .npy arrays whose headers claim no more than they hold
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
                     progress: bool = True, trust: bool = False,
                     embedder=None, pixel_cache: str | Path | None = None) -> tuple[dict[str, Any], ScoredPairs]:
    """Crop (cached), embed and score ``eval_set`` with a checkpoint; ``crop=None``: the model's own
    crop settings. Returns ``(metrics, ScoredPairs)``; metrics name the checkpoint and its step.
    ``embedder``: a :class:`~stn_face.embedder.FaceEmbedder` built already (a pretrained backbone alone,
    ``FaceEmbedder.from_pretrained``) instead of ``ckpt``. ``pixel_cache``: a folder for the crops' decoded
    pixels (:mod:`stn_face.data.pixel_pack`; ``stn-face-eval`` uses ``pack_folder()``): read from their pack
    there, written on first use; None decodes every crop."""
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
    if embedder is None:
        embedder = FaceEmbedder.from_checkpoint(ckpt, device=device, trust=trust)
    eval_set.check_training_identities(embedder.class_names)
    eval_set.prepare(crop or embedder.crop_settings, workers=prepare_workers, progress=progress)
    eval_set.resolve()
    features = embedder.embed_files(eval_set.items, batch_size=batch_size, progress=progress, flip=flip,
                                    pixel_cache=pixel_cache)
    metrics, pairs = set_metrics(eval_set, features)
    metrics.update({"ckpt": str(embedder.checkpoint_path) if embedder.checkpoint_path else None,
                    "step": embedder.step, "flip": flip})
    if embedder.checkpoint_path is None:  # a pretrained backbone alone: say which
        metrics["backbone"] = {k: embedder.config["backbone"].get(k) for k in ("_target_", "weights")}
    return metrics, pairs


def score_embeddings(eval_set, embeddings_file: str | Path) -> tuple[dict[str, Any], ScoredPairs]:
    """Score ``eval_set`` from an ``.npz`` of ``names`` and ``embeddings``; returns ``(metrics, ScoredPairs)``."""
    names, embeddings = load_embeddings(embeddings_file)
    features = attach_embeddings(eval_set, names, embeddings, str(embeddings_file))
    metrics, pairs = set_metrics(eval_set, features)
    metrics["embeddings"] = str(Path(embeddings_file).expanduser().resolve())
    return metrics, pairs
