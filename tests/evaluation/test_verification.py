"""Verification metrics against scikit-learn and brute force, on seeded and on real (raw-pixel) scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from stn_face.data.protocols import Pair, read_lfw_pairs, unique_images
from stn_face.evaluation.verification import (
    accuracy_at_threshold,
    auc,
    best_threshold,
    eer,
    evaluate_verification,
    far_key,
    far_measurable,
    flip_sum_features,
    kfold_accuracy,
    l2_normalize,
    pair_scores,
    roc_curve,
    tar_at_far,
    ytf_video_features,
)


def lfw_shaped(scores_same: np.ndarray, scores_diff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrange per-fold same/different scores (10, n) in the LFW View 2 file order."""
    folds, per = scores_same.shape
    scores = np.concatenate([np.concatenate((scores_same[f], scores_diff[f])) for f in range(folds)])
    labels = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], folds)
    return scores, labels, np.repeat(np.arange(folds), 2 * per)


def mixture(seed: int = 0, separation: float = 2.0, per: int = 300, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    same = rng.normal(separation, 1.0, (10, per))
    diff = rng.normal(0.0, 1.0, (10, per))
    scores, labels, folds = lfw_shaped(same, diff)
    if decimals is not None:  # many ties
        scores = np.round(scores, decimals)
    return scores, labels, folds


@pytest.fixture(scope="module")
def raw_pixel_scores(lfw_dir: Path):
    """Cosine of mean-removed 64x64 grayscale centre crops, 30 same + 30 different pairs per fold."""
    from PIL import Image

    pairs = [p for i, p in enumerate(read_lfw_pairs(lfw_dir / "pairs.txt")) if (i % 600) % 300 < 30]
    names = unique_images(pairs)

    def pixels(name: str) -> np.ndarray:
        with Image.open(lfw_dir / "lfw-deepfunneled" / name) as image:
            crop = image.convert("L").crop((75, 75, 175, 175)).resize((64, 64), Image.BILINEAR)
        values = np.asarray(crop, dtype=np.float64).ravel()
        return values - values.mean()

    return pair_scores((names, np.stack([pixels(n) for n in names])), pairs)


SEEDED = {
    "separated": {"seed": 0},
    "overlapping-with-ties": {"seed": 1, "separation": 0.5, "decimals": 1},
    "small": {"seed": 2, "separation": 1.0, "per": 50},
}


@pytest.fixture(params=[*SEEDED, pytest.param("raw-pixels", marks=pytest.mark.data)])
def scored(request):
    """(scores, labels, folds) from a seeded Gaussian mixture or from real LFW raw-pixel features."""
    if request.param == "raw-pixels":
        return request.getfixturevalue("raw_pixel_scores")
    return mixture(**SEEDED[request.param])


# ------------------------------------------------------------------ features


def test_l2_normalize_and_flip_sum() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    assert np.allclose(np.linalg.norm(l2_normalize(a), axis=1), 1.0)
    assert np.all(l2_normalize(np.zeros((1, 3))) == 0)
    combined = flip_sum_features(a, b)
    expected = a / np.linalg.norm(a, axis=1, keepdims=True) + b / np.linalg.norm(b, axis=1, keepdims=True)
    assert np.allclose(combined, expected / np.linalg.norm(expected, axis=1, keepdims=True))
    assert np.allclose(flip_sum_features(3 * a, 0.1 * b), combined)  # each side normalised first
    assert np.allclose(flip_sum_features(a, a), l2_normalize(a))
    with pytest.raises(ValueError):
        flip_sum_features(a, b[:, :4])


def test_pair_scores_dict_matrix_and_tuples() -> None:
    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    matrix = rng.normal(size=(3, 4))
    pairs = [Pair("a", "b", True, 0), Pair("c", "a", False, 3)]
    scores, labels, folds = pair_scores((names, matrix), pairs)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    assert np.allclose(scores, [unit[0] @ unit[1], unit[2] @ unit[0]])
    assert labels.tolist() == [True, False] and folds.tolist() == [0, 3]
    by_name = dict(zip(names, 5 * matrix))
    assert np.allclose(pair_scores(by_name, [("a", "b", 1, 0), ("c", "a", 0, 3)])[0], scores)
    with pytest.raises(KeyError, match="1 images named by the pairs have no feature"):
        pair_scores(by_name, [Pair("a", "zz", True, 0)])


def test_ytf_video_features() -> None:
    rng = np.random.default_rng(2)
    frames = rng.normal(size=(10, 6))
    unit = l2_normalize(frames)
    video = ytf_video_features({"A/1": frames})["A/1"]
    assert np.allclose(video, l2_normalize(unit.mean(0)))
    first = ytf_video_features({"A/1": frames}, max_frames=3, sampling="first")["A/1"]
    assert np.allclose(first, l2_normalize(unit[:3].mean(0)))
    even = ytf_video_features({"A/1": frames}, max_frames=4)["A/1"]
    assert np.allclose(even, l2_normalize(unit[[0, 3, 6, 9]].mean(0)))
    assert np.allclose(
        ytf_video_features({"A/1": frames[:2]}, max_frames=4)["A/1"], l2_normalize(unit[:2].mean(0))
    )
    with pytest.raises(ValueError):
        ytf_video_features({"A/1": frames}, sampling="random")


# ------------------------------------------------------------------ ROC against scikit-learn


def test_roc_matches_sklearn(scored) -> None:
    scores, labels, _ = scored
    fpr, tpr, thresholds = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr, atol=1e-15) and np.allclose(tpr, sk_tpr, atol=1e-15)
    assert np.array_equal(thresholds[1:], sk_thresholds[1:]) and thresholds[0] == np.inf
    assert abs(auc(fpr, tpr) - roc_auc_score(labels, scores)) < 1e-12
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_eer_and_tar_brute_force(scored) -> None:
    scores, labels, _ = scored
    fpr, tpr, thresholds = roc_curve(scores, labels)
    rate, threshold = eer(fpr, tpr, thresholds)
    fnr = 1 - tpr
    # the crossing lies between the best vertex bounds
    assert np.max(np.minimum(fpr, fnr)) - 1e-12 <= rate <= np.min(np.maximum(fpr, fnr)) + 1e-12
    assert threshold is not None and scores.min() <= threshold <= scores.max()
    positives, negatives = scores[labels], scores[~labels]
    for far in (1e-1, 1e-2, 1e-3):
        best = 0.0
        for t in np.unique(scores):
            if np.mean(negatives >= t) <= far:
                best = max(best, np.mean(positives >= t))
        assert tar_at_far(scores, labels, far) == pytest.approx(best, abs=1e-15)


def test_eer_of_gaussian_mixture_is_near_theory() -> None:
    from math import erf, sqrt

    scores, labels, _ = mixture(seed=3, separation=2.0)
    fpr, tpr, _ = roc_curve(scores, labels)
    theory = 0.5 * (1 + erf(-1.0 / sqrt(2)))  # Phi(-d/2), d = 2
    assert eer(fpr, tpr)[0] == pytest.approx(theory, abs=0.015)


# ------------------------------------------------------------------ k-fold accuracy against brute force


def brute_force_training_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best accuracy over every threshold that changes a decision: each distinct score and +inf."""
    candidates = np.r_[np.unique(scores), np.inf]
    accuracies = [np.mean((scores >= t) == labels) for t in candidates]
    return float(max(accuracies))


def test_kfold_threshold_is_exactly_optimal(scored) -> None:
    scores, labels, folds = scored
    result = kfold_accuracy(scores, labels, folds)
    grid = np.linspace(scores.min() - 0.1, scores.max() + 0.1, 20001)
    for fold, threshold, accuracy in zip(result["folds"], result["thresholds"], result["fold_accuracies"]):
        train = folds != fold
        chosen = accuracy_at_threshold(scores[train], labels[train], threshold)
        assert chosen == pytest.approx(brute_force_training_accuracy(scores[train], labels[train]), abs=1e-15)
        grid_best = max(np.mean((scores[train] >= t) == labels[train]) for t in grid[::10])
        assert chosen >= grid_best - 1e-15
        assert accuracy == pytest.approx(np.mean((scores[~train] >= threshold) == labels[~train]), abs=1e-15)
    accuracies = np.asarray(result["fold_accuracies"])
    assert result["mean"] == pytest.approx(accuracies.mean())
    assert result["std"] == pytest.approx(np.std(accuracies))  # population std, ddof=0
    assert result["sem"] == pytest.approx(np.std(accuracies, ddof=1) / np.sqrt(len(accuracies)))


def test_tie_break_takes_the_middle_maximiser() -> None:
    # accuracy 4/6 at the thresholds 0.5, 2.5 and 4.5: the middle one wins
    threshold, accuracy = best_threshold([0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 0, 1])
    assert threshold == 2.5 and accuracy == pytest.approx(4 / 6)
    # adjacent floats: the threshold must still separate them
    low = 0.3
    high = np.nextafter(low, 1.0)
    threshold, accuracy = best_threshold([low, high], [False, True])
    assert low < threshold <= high and accuracy == 1.0


def test_perfect_separation_and_random() -> None:
    rng = np.random.default_rng(4)
    perfect = evaluate_verification(
        *lfw_shaped(rng.uniform(0.6, 1, (10, 300)), rng.uniform(-1, 0.5, (10, 300)))
    )
    assert perfect["accuracy_mean"] == 1.0 and perfect["fold_accuracies"] == [1.0] * 10
    assert perfect["auc"] == 1.0 and perfect["eer"] == 0.0 and perfect["tar_at_far"]["1e-3"] == 1.0
    assert 0.5 < perfect["best_threshold"] < 0.6
    random = evaluate_verification(*lfw_shaped(rng.uniform(size=(10, 300)), rng.uniform(size=(10, 300))))
    assert random["accuracy_mean"] == pytest.approx(0.5, abs=0.03)
    assert random["auc"] == pytest.approx(0.5, abs=0.03) and random["eer"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.data
def test_raw_pixels_give_weak_but_real_accuracy(raw_pixel_scores) -> None:
    scores, labels, folds = raw_pixel_scores
    summary = evaluate_verification(scores, labels, folds)
    assert 0.55 <= summary["accuracy_mean"] <= 0.75
    assert 0.58 <= summary["auc"] <= 0.8
    assert summary["n_pairs"] == 600 and summary["negatives_per_fold"] == [30] * 10


# ------------------------------------------------------------------ the summary


def test_evaluate_verification_summary() -> None:
    scores, labels, folds = mixture(seed=5)
    summary = evaluate_verification(scores, labels, folds)
    json.dumps(summary, allow_nan=False)  # strict JSON
    for key in (
        "accuracy_mean",
        "accuracy_std",
        "accuracy_sem",
        "fold_accuracies",
        "thresholds",
        "best_threshold",
        "auc",
        "eer",
        "tar_at_far",
        "n_pairs",
        "n_same",
        "n_diff",
        "negatives_per_fold",
        "protocol",
    ):
        assert key in summary
    assert (summary["n_pairs"], summary["n_same"], summary["n_diff"]) == (6000, 3000, 3000)
    assert summary["negatives_per_fold"] == [300] * 10 and len(summary["thresholds"]) == 10
    assert set(summary["tar_at_far"]) == {"1e-2", "1e-3"}
    assert summary["tar_at_far_measurable"] == {
        "1e-2": {"pooled": True, "per_fold": True},
        "1e-3": {"pooled": True, "per_fold": False},
    }
    assert "population std (ddof=0)" in summary["protocol"] and "not per fold" in summary["protocol"]
    assert summary["best_accuracy"] == pytest.approx(brute_force_training_accuracy(scores, labels))
    assert summary["accuracy_mean"] <= summary["best_accuracy"] + 1e-12
    assert summary["accuracy_mean"] == pytest.approx(0.84, abs=0.02)  # Phi(1) for d = 2


def test_single_fold_and_bad_input() -> None:
    scores, labels, _ = mixture(seed=6, per=50)
    summary = evaluate_verification(scores, labels)
    assert summary["n_folds"] == 1 and summary["accuracy_sem"] is None
    assert summary["accuracy_mean"] == summary["best_accuracy"]
    json.dumps(summary, allow_nan=False)
    one_class = evaluate_verification(scores[labels][:3], labels[labels][:3])
    assert one_class["accuracy_mean"] == 1.0 and one_class["auc"] is None and one_class["eer"] is None
    assert one_class["tar_at_far"] == {"1e-2": None, "1e-3": None}
    json.dumps(one_class, allow_nan=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_verification(np.r_[scores[:-1], np.nan], labels)
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(scores[labels], labels[labels])
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy(scores, labels, np.zeros_like(scores))


def test_far_helpers() -> None:
    assert far_key(1e-2) == "1e-2" and far_key(1e-3) == "1e-3" and far_key(5e-4) == "5e-4"
    assert not far_measurable(1e-3, 300) and far_measurable(1e-3, 3000) and far_measurable(1e-2, 300)


def test_no_torch_import() -> None:
    import subprocess

    code = "import sys, stn_face.evaluation.verification; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
