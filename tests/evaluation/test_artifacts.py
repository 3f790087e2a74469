"""The result files' one owner: ROC files, the metrics.json record for every kind of run, its readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stn_face.evaluation.artifacts import (
    format_table,
    load_pair_scores,
    load_roc_npz,
    read_metrics,
    read_record,
    run_record,
    save_metrics_json,
    save_roc_npz,
    write_metrics,
)
from stn_face.evaluation.verification import ScoredPairs, evaluate_verification, roc_curve

LABELS = np.tile(np.repeat([True, False], 300), 10)  # 6,000 pairs in 10 folds of 300 + 300
FOLDS = np.repeat(np.arange(10), 600)


def test_roc_file_round_trip(tmp_path: Path) -> None:
    scores = np.random.default_rng(7).normal(size=LABELS.size) + LABELS
    fpr, tpr, thresholds = roc_curve(scores, LABELS)
    path = save_roc_npz(tmp_path / "run" / "roc_lfw.npz", fpr, tpr, thresholds)
    loaded_fpr, loaded_tpr = load_roc_npz(path)
    assert np.array_equal(loaded_fpr, fpr) and np.array_equal(loaded_tpr, tpr)


def test_stored_pairs_round_trip(tmp_path: Path) -> None:
    scores = np.random.default_rng(1).normal(size=6000)
    pairs = ScoredPairs(scores, LABELS, FOLDS)
    save_roc_npz(tmp_path / "roc_lfw.npz", *pairs.roc(), pairs=pairs)
    loaded = load_pair_scores(tmp_path / "roc_lfw.npz")
    assert np.array_equal(loaded.scores, scores) and np.array_equal(loaded.labels, LABELS)
    assert np.array_equal(loaded.folds, FOLDS)
    save_roc_npz(tmp_path / "old.npz", *pairs.roc())
    assert load_pair_scores(tmp_path / "old.npz") is None


def test_metrics_layouts(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(
        json.dumps({"lfw/accuracy_mean": 0.9, "lfw/auc": 0.95, "ytf/accuracy_mean": 0.8, "epoch": 3})
    )
    assert read_metrics(path) == {"lfw": {"accuracy_mean": 0.9, "auc": 0.95}, "ytf": {"accuracy_mean": 0.8}}
    path.write_text(json.dumps({"accuracy_mean": 0.7, "benchmark": "ytf"}))
    assert set(read_metrics(path)) == {"ytf"}
    save_metrics_json(path, {"lfw": {"x": np.float64("nan"), "y": np.arange(2)}})
    assert json.loads(path.read_text()) == {"lfw": {"x": None, "y": [0, 1]}}


def _metrics(seed: int = 0) -> dict:
    scores = np.random.default_rng(seed).normal(size=LABELS.size) + LABELS
    return evaluate_verification(scores, LABELS, FOLDS)


@pytest.mark.parametrize("kind", ["train", "validate", "eval"])
def test_every_kind_of_run_gets_its_record_from_one_builder(tmp_path: Path, kind: str) -> None:
    lfw, ytf = _metrics(0), _metrics(1)
    record = run_record(kind, {"ytf": ytf, "lfw": lfw}, ["missing", "lfw", "ytf"], step=12,
                        best={"lfw": lfw}, train={"train/loss": 1.5}, skipped_steps=2)
    assert record["format"] == 1 and record["kind"] == kind
    assert record["eval"] == "lfw" and record["accuracy_mean"] == lfw["accuracy_mean"]  # first scored of the order
    assert set(record["sets"]) == {"lfw", "ytf"}
    if kind == "eval":  # a checkpoint's step is in the set's own metrics
        assert "global_step" not in record and "best" not in record and "train" not in record
    else:
        assert (record["step"], record["global_step"], record["skipped_steps"]) == (12, 12, 2)
        assert ("best" in record) == ("train" in record) == (kind == "train")
    path = write_metrics(tmp_path, record)
    assert read_record(path)["kind"] == kind  # top-level fields come back through the one reader
    assert read_metrics(path)["lfw"]["accuracy_mean"] == lfw["accuracy_mean"]
    assert read_record(tmp_path / "absent.json", missing_ok=True) == {}


def test_nothing_scored_and_bad_kind() -> None:
    record = run_record("train", {}, ["lfw"], step=0)
    assert "eval" not in record and record["sets"] == {} and record["best"] == {} and "train" not in record
    with pytest.raises(ValueError, match="kind"):
        run_record("interim", {}, [])


def test_format_table_names_the_set_and_its_limits() -> None:
    metrics = dict(_metrics(), eval="lfw", pairs_file="/data/lfw/pairs.txt", skipped_pairs=3, max_pairs_per_fold=5)
    table = format_table(metrics)
    assert "lfw (pairs.txt: 6000 pairs" in table and "skipped pairs" in table and "limited" in table
