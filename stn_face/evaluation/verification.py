"""Face verification metrics on embeddings: k-fold accuracy, ROC, AUC, EER, TAR@FAR.

Plain numpy (no torch), so any model's embeddings can be scored. The protocol, stated exactly:

- **Scores.** A pair's score is the cosine similarity of its two features; a pair is called "same"
  when ``score >= threshold``. The feature of an image is by default the *flip-sum* feature
  (:func:`flip_sum_features`): the L2-normalised embeddings of the image and its mirror image,
  summed and normalised again. A YTF video's feature is the re-normalised mean of its frames'
  normalised features (:func:`ytf_video_features`).
- **Accuracy (LFW View 2 / YTF).** Folds are taken as given (LFW: the 10 blocks of ``pairs.txt`` in
  file order; YTF: the 10 splits). For each fold, the threshold is the one maximising accuracy on the
  other folds, searched exactly over every midpoint between consecutive distinct training scores
  plus one value below and one above all of them; it is then applied unchanged to the held-out fold.
  Ties between equally good thresholds are broken by taking the middle one (the median position in
  the sorted list of maximisers, lower middle for an even count). The reported accuracy is the mean
  of the 10 held-out accuracies ± their **population** standard deviation (``ddof=0``, numpy's
  default, as insightface reports it); the standard error of the mean in the LFW report's sense,
  ``std(ddof=1) / sqrt(k)``, is returned as well.
- **ROC, AUC, EER, TAR@FAR** are computed on all pairs pooled. The ROC is exact (one point per
  distinct score). TAR@FAR=f is the highest TPR among operating points whose FPR <= f, without
  interpolation; it is only meaningful when ``f * negatives >= 1`` (at least one false accept is
  allowed). With 300 negatives per LFW fold, FAR=1e-3 is below 1/300 and not measurable per fold;
  pooled over the 3,000 negatives it is (3 false accepts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_FARS",
    "ScoredPairs",
    "accuracy_at_threshold",
    "auc",
    "best_threshold",
    "eer",
    "evaluate_verification",
    "far_key",
    "far_measurable",
    "flip_sum_features",
    "kfold_accuracy",
    "kfold_correct",
    "l2_normalize",
    "pair_scores",
    "roc_curve",
    "tar_at_far",
    "ytf_video_features",
]

#: False accept rates at which TAR is reported by default.
DEFAULT_FARS: tuple[float, ...] = (1e-2, 1e-3)


# --------------------------------------------------------------------------------------------------
# Features and scores


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / ||x||`` along ``axis`` in float64; rows of (near) zero norm are divided by ``eps``."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def flip_sum_features(emb: np.ndarray, emb_flipped: np.ndarray) -> np.ndarray:
    """The image+mirror feature: normalise each embedding (N, D), sum, normalise again."""
    emb = np.asarray(emb)
    emb_flipped = np.asarray(emb_flipped)
    if emb.shape != emb_flipped.shape:
        raise ValueError(f"embeddings {emb.shape} and flipped embeddings {emb_flipped.shape} differ in shape")
    return l2_normalize(l2_normalize(emb) + l2_normalize(emb_flipped))


def _pair_fields(pair: Any) -> tuple[str, str, bool, int]:
    if hasattr(pair, "left"):
        return pair.left, pair.right, bool(pair.same), int(pair.fold)
    left, right, same, fold = pair
    return left, right, bool(same), int(fold)


def pair_scores(
    features: Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray],
    pairs: Iterable[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine similarity of each pair's two features.

    ``features`` is a mapping name -> vector or a tuple ``(names, matrix)`` (the ``.npz`` layout with
    ``names`` and ``embeddings``). ``pairs`` are :class:`stn_face.data.protocols.Pair` objects (or
    ``(left, right, same, fold)`` tuples). Returns ``scores`` (float64), ``labels`` (bool, True for
    same) and ``folds`` (int), one entry per pair in order. Raises ``KeyError`` listing the missing
    names if a pair names an image without a feature.
    """
    if isinstance(features, tuple):
        names, matrix = features
        matrix = np.asarray(matrix)
        if len(names) != len(matrix):
            raise ValueError(f"{len(names)} names but {len(matrix)} feature rows")
        index = {str(name): row for row, name in enumerate(names)}
    else:
        names = list(features)
        matrix = np.stack([np.asarray(features[name]) for name in names]) if names else np.zeros((0, 1))
        index = {name: row for row, name in enumerate(names)}
    matrix = l2_normalize(matrix)

    fields = [_pair_fields(pair) for pair in pairs]
    missing = sorted({name for left, right, _, _ in fields for name in (left, right) if name not in index})
    if missing:
        raise KeyError(
            f"{len(missing)} images named by the pairs have no feature, e.g. {missing[:5]}; "
            "embed every image of the protocol (see stn_face.data.protocols.unique_images)"
        )
    left = np.array([index[f[0]] for f in fields], dtype=np.int64)
    right = np.array([index[f[1]] for f in fields], dtype=np.int64)
    scores = np.einsum("ij,ij->i", matrix[left], matrix[right]) if len(fields) else np.zeros(0)
    labels = np.array([f[2] for f in fields], dtype=bool)
    folds = np.array([f[3] for f in fields], dtype=np.int64)
    return scores.astype(np.float64), labels, folds


def ytf_video_features(
    frame_features_by_video: Mapping[str, np.ndarray],
    max_frames: int | None = None,
    sampling: str = "even",
) -> dict[str, np.ndarray]:
    """One feature per video: the re-normalised mean of its frames' normalised features.

    ``frame_features_by_video`` maps ``Name/video`` to an array (frames, D) in frame order. With
    ``max_frames`` set, only that many frames are used: the first ones (``sampling="first"``) or ones
    evenly spaced over the video, first and last included (``sampling="even"``).
    """
    if sampling not in ("first", "even"):
        raise ValueError(f"sampling must be 'first' or 'even', got {sampling!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive or None, got {max_frames}")
    videos = {}
    for video, frames in frame_features_by_video.items():
        frames = np.asarray(frames)
        if frames.ndim != 2 or len(frames) == 0:
            raise ValueError(
                f"video {video!r}: expected frame features (frames, D), got shape {frames.shape}"
            )
        if max_frames is not None and len(frames) > max_frames:
            if sampling == "first":
                frames = frames[:max_frames]
            else:
                frames = frames[np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(np.int64)]
        videos[video] = l2_normalize(l2_normalize(frames).mean(axis=0))
    return videos


# --------------------------------------------------------------------------------------------------
# Thresholds and k-fold accuracy


def _as_arrays(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores hold NaN or infinite values (a zero embedding, or a failed forward pass?)")
    return scores, labels


def accuracy_at_threshold(scores: Any, labels: Any, threshold: float) -> float:
    """Fraction of pairs classified correctly when "same" means ``score >= threshold``."""
    scores, labels = _as_arrays(scores, labels)
    return float(np.mean((scores >= threshold) == labels))


def _candidate_accuracies(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct decision on ``scores``: candidate thresholds and the accuracy of each.

    Candidates are one value below the smallest score, the midpoints between consecutive distinct
    scores, and one value above the largest; together they realise every possible split.
    """
    unique, inverse = np.unique(scores, return_inverse=True)
    positives = np.bincount(inverse, weights=labels, minlength=len(unique))
    negatives = np.bincount(inverse, weights=~labels, minlength=len(unique))
    margin = max(1.0, float(unique[-1] - unique[0]))
    middles = (unique[:-1] + unique[1:]) / 2
    middles = np.where(middles > unique[:-1], middles, unique[1:])  # adjacent floats: stay above the lower
    thresholds = np.concatenate(([unique[0] - margin], middles, [unique[-1] + margin]))
    # Threshold k lies just below unique[k]: pairs with score index >= k are called same.
    negatives_below = np.concatenate(([0.0], np.cumsum(negatives)))  # true rejects
    positives_above = positives.sum() - np.concatenate(([0.0], np.cumsum(positives)))  # true accepts
    accuracies = (negatives_below + positives_above) / len(scores)
    return thresholds, accuracies


def best_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """The threshold maximising accuracy on these pairs (exact search, ties -> middle) and its accuracy."""
    scores, labels = _as_arrays(scores, labels)
    if scores.size == 0:
        raise ValueError("cannot choose a threshold on zero pairs")
    thresholds, accuracies = _candidate_accuracies(scores, labels)
    best = np.flatnonzero(accuracies == accuracies.max())
    chosen = best[(len(best) - 1) // 2]
    return float(thresholds[chosen]), float(accuracies[chosen])


def kfold_correct(scores: Any, labels: Any, folds: Any) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Each pair's outcome under the leave-one-fold-out protocol (the threshold chosen on the other folds).

    Returns ``correct`` (P,) bool, the sorted fold ids (k,) and one threshold per fold. Paired
    comparisons of two models on the same pairs start from these outcomes
    (:mod:`stn_face.evaluation.comparison`). Needs at least two folds.
    """
    scores, labels = _as_arrays(scores, labels)
    folds = np.asarray(folds).ravel()
    if folds.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {folds.size} fold ids")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError(f"k-fold accuracy needs at least 2 folds, got {len(fold_ids)}")
    correct = np.zeros(scores.shape, dtype=bool)
    thresholds = []
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        correct[test] = (scores[test] >= threshold) == labels[test]
    return correct, fold_ids, thresholds


def kfold_accuracy(scores: Any, labels: Any, folds: Any) -> dict[str, Any]:
    """Leave-one-fold-out accuracy: threshold chosen on the other folds, applied to the held-out one.

    Returns a dict with ``folds`` (fold ids, sorted), ``fold_accuracies``, ``thresholds`` (one per
    fold), ``mean``, ``std`` (population std over folds, ``ddof=0``) and ``sem`` (standard error of
    the mean, ``std(ddof=1) / sqrt(k)``). Needs at least two folds.
    """
    correct, fold_ids, thresholds = kfold_correct(scores, labels, folds)
    folds = np.asarray(folds).ravel()
    accuracies_arr = np.asarray([correct[folds == fold].mean() for fold in fold_ids])
    return {
        "folds": [int(f) for f in fold_ids],
        "fold_accuracies": [float(a) for a in accuracies_arr],
        "thresholds": [float(t) for t in thresholds],
        "mean": float(accuracies_arr.mean()),
        "std": float(accuracies_arr.std()),
        "sem": float(accuracies_arr.std(ddof=1) / np.sqrt(len(accuracies_arr))),
    }


# --------------------------------------------------------------------------------------------------
# ROC and the numbers read from it


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact ROC: one point per distinct score, from (0, 0) to (1, 1).

    Returns ``fpr``, ``tpr`` and ``thresholds`` (decreasing; the first is ``+inf``, calling nothing
    same), where point ``k`` calls a pair same when ``score >= thresholds[k]``. This equals
    scikit-learn's ``roc_curve(labels, scores, drop_intermediate=False)``.
    """
    scores, labels = _as_arrays(scores, labels)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a ROC needs both classes, got {n_pos} same and {n_neg} different pairs")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # Last index of each run of equal scores: the operating points.
    ends = np.concatenate((np.flatnonzero(np.diff(sorted_scores) != 0), [sorted_scores.size - 1]))
    true_accepts = np.cumsum(sorted_labels)[ends]
    false_accepts = (ends + 1) - true_accepts
    tpr = np.concatenate(([0.0], true_accepts / n_pos))
    fpr = np.concatenate(([0.0], false_accepts / n_neg))
    thresholds = np.concatenate(([np.inf], sorted_scores[ends]))
    return fpr, tpr, thresholds


def auc(fpr: Any, tpr: Any) -> float:
    """Area under a ROC by the trapezoidal rule (for the exact ROC: the Mann-Whitney statistic)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def eer(fpr: Any, tpr: Any, thresholds: Any | None = None) -> tuple[float, float | None]:
    """Equal error rate: where FPR equals FNR = 1 - TPR, linearly interpolated along the ROC.

    Returns ``(eer, threshold)``; the threshold is interpolated the same way (None without
    ``thresholds``, or when the crossing is at the ``+inf`` end point).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = 1.0 - np.asarray(tpr, dtype=np.float64)
    gap = fnr - fpr  # starts at +1 (nothing accepted) and ends at -1 (everything accepted)
    k = int(np.flatnonzero(gap <= 0)[0])
    if k == 0 or gap[k] == 0:
        rate, weight, low = float(fpr[k]), 1.0, k
    else:
        weight = float(gap[k - 1] / (gap[k - 1] - gap[k]))
        rate = float(fpr[k - 1] + weight * (fpr[k] - fpr[k - 1]))
        low = k - 1
    threshold = None
    if thresholds is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if low == k:
            value = thresholds[k]
        else:
            value = thresholds[low] + weight * (thresholds[k] - thresholds[low])
        threshold = float(value) if np.isfinite(value) else None
    return rate, threshold


def tar_at_far(scores: Any, labels: Any, far: float) -> float:
    """True accept rate at the best operating point whose false accept rate is at most ``far``.

    No interpolation: this is the TPR of the lowest threshold that keeps FPR <= ``far``. When
    ``far * negatives < 1`` the only such point accepts no impostor at all; see :func:`far_measurable`.
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(tpr[fpr <= far].max())


def far_measurable(far: float, negatives: int) -> bool:
    """Whether a FAR can be resolved with this many negative pairs (at least one false accept)."""
    return far * negatives >= 1.0 - 1e-9


def far_key(far: float) -> str:
    """The JSON key of a FAR: ``1e-2``, ``1e-3``, ``5e-4``..."""
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e-{abs(int(exponent))}" if int(exponent) < 0 else f"{mantissa}e{int(exponent)}"


# --------------------------------------------------------------------------------------------------
# Everything at once


def _protocol_text(n_folds: int, fars: Sequence[float], n_neg_fold_min: int, n_neg: int) -> str:
    if n_folds >= 2:
        accuracy = (
            f"{n_folds}-fold accuracy: for each fold the threshold maximising accuracy on the other "
            f"{n_folds - 1} folds (exact search over midpoints of sorted distinct scores, ties -> middle) "
            "is applied to the held-out fold; mean +- population std (ddof=0) over folds, sem = "
            f"std(ddof=1)/sqrt({n_folds})"
        )
    else:
        accuracy = (
            "single set: accuracy at the threshold chosen on these same pairs (optimistic; no held-out fold)"
        )
    measurable = []
    for far in fars:
        pooled = "measurable pooled" if far_measurable(far, n_neg) else "NOT measurable even pooled"
        per_fold = "and per fold" if far_measurable(far, n_neg_fold_min) else "but not per fold"
        if not far_measurable(far, n_neg):
            per_fold = "nor per fold"
        measurable.append(
            f"FAR={far_key(far)} {pooled} ({n_neg} negatives) {per_fold} (min {n_neg_fold_min} negatives)"
        )
    return (
        f"score = cosine similarity, same iff score >= threshold; {accuracy}; ROC/AUC/EER/TAR@FAR on "
        f"all {n_neg} negatives pooled ({'; '.join(measurable)})"
    )


def evaluate_verification(
    scores: Any,
    labels: Any,
    folds: Any | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, Any]:
    """All verification numbers as one JSON-serialisable dict.

    Keys: ``accuracy_mean``, ``accuracy_std`` (population, ddof=0), ``accuracy_sem``,
    ``fold_accuracies``, ``thresholds`` (one per fold), ``best_threshold`` and ``best_accuracy``
    (threshold maximising accuracy over all pairs, to calibrate ``verify``), ``auc``, ``eer``,
    ``eer_threshold``, ``tar_at_far`` ({"1e-2": ..., "1e-3": ...}, pooled), ``tar_at_far_measurable``
    ({"1e-2": {"pooled": bool, "per_fold": bool}, ...}), ``n_pairs``, ``n_same``, ``n_diff``,
    ``n_folds``, ``negatives_per_fold``, ``protocol`` (the protocol in words). Accuracies are
    fractions in [0, 1]. The ROC arrays are not included: get them from :func:`roc_curve` (and save
    them with :func:`stn_face.evaluation.artifacts.save_roc_npz`).

    With ``folds`` None or a single fold, no held-out accuracy exists: ``accuracy_mean`` is then the
    accuracy at ``best_threshold`` (optimistic), ``accuracy_std`` is 0 and ``accuracy_sem`` None.
    When the pairs hold only one class, no ROC exists: ``auc``, ``eer``, ``eer_threshold`` and the
    ``tar_at_far`` values are None.
    """
    scores, labels = _as_arrays(scores, labels)
    if scores.size == 0:
        raise ValueError("no pairs to evaluate")
    folds_arr = np.zeros(scores.size, dtype=np.int64) if folds is None else np.asarray(folds).ravel()
    if folds_arr.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {folds_arr.size} fold ids")
    fold_ids = np.unique(folds_arr)
    negatives_per_fold = [int(np.sum(~labels[folds_arr == f])) for f in fold_ids]
    n_neg = int(np.sum(~labels))

    threshold, accuracy = best_threshold(scores, labels)
    if len(fold_ids) >= 2:
        kfold = kfold_accuracy(scores, labels, folds_arr)
        mean, std, sem = kfold["mean"], kfold["std"], kfold["sem"]
        fold_accuracies, thresholds = kfold["fold_accuracies"], kfold["thresholds"]
    else:
        mean, std, sem = accuracy, 0.0, None
        fold_accuracies, thresholds = [accuracy], [threshold]

    if 0 < n_neg < scores.size:
        fpr, tpr, roc_thresholds = roc_curve(scores, labels)
        auc_value = auc(fpr, tpr)
        eer_value, eer_threshold = eer(fpr, tpr, roc_thresholds)
        tars = {far_key(far): float(tpr[fpr <= far].max()) for far in fars}
    else:  # one class only (e.g. the few YTF pairs available locally): no ROC exists
        auc_value = eer_value = eer_threshold = None
        tars = {far_key(far): None for far in fars}
    return {
        "accuracy_mean": mean,
        "accuracy_std": std,
        "accuracy_sem": sem,
        "fold_accuracies": fold_accuracies,
        "thresholds": thresholds,
        "best_threshold": threshold,
        "best_accuracy": accuracy,
        "auc": auc_value,
        "eer": eer_value,
        "eer_threshold": eer_threshold,
        "tar_at_far": tars,
        "tar_at_far_measurable": {
            far_key(far): {
                "pooled": far_measurable(far, n_neg),
                "per_fold": far_measurable(far, min(negatives_per_fold)),
            }
            for far in fars
        },
        "n_pairs": int(scores.size),
        "n_same": int(labels.sum()),
        "n_diff": n_neg,
        "n_folds": len(fold_ids),
        "negatives_per_fold": negatives_per_fold,
        "protocol": _protocol_text(len(fold_ids), fars, min(negatives_per_fold), n_neg),
    }


# --------------------------------------------------------------------------------------------------
# Scored pairs (the ROC files that store them are :mod:`stn_face.evaluation.artifacts`)


class ScoredPairs(NamedTuple):
    """Every scored pair of a set, in pair-file order: ``scores`` (P,) float cosine similarities,
    ``labels`` (P,) bool (same person), ``folds`` (P,) int fold ids."""

    scores: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` of :func:`roc_curve`; two empty arrays when the pairs hold one class only."""
        if self.labels.all() or not self.labels.any():
            return np.zeros(0), np.zeros(0)
        fpr, tpr, _ = roc_curve(self.scores, self.labels)
        return fpr, tpr
