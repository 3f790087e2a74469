"""Scoring a checkpoint never uses the people it was trained on silently (the identity-overlap guard)."""

from __future__ import annotations

import json

import pytest

from stn_face.cli import eval as evaluate_cli
from stn_face.data.eval_sets import first_per_fold
from stn_face.data.protocols import read_lfw_pairs
from tests.helpers import compose_cli, expect_input_error

PER_FOLD = 18  # the first 18 same + 18 different pairs of each fold hold one pair of a training person


def _eval_cfg(tmp_path, *overrides):
    return compose_cli("evaluate", [f"paths.output_dir={tmp_path}", "progress=false", *overrides])


def _overlap(pairs, people) -> list:
    return [p for p in pairs if p.left.split("/")[0] in people or p.right.split("/")[0] in people]


@pytest.mark.slow
def test_training_identities_stop_the_evaluation_or_are_excluded(checkpoints, view2_crops, data_dir, tmp_path,
                                                                 capsys):
    import torch

    ckpt = checkpoints["projective"]
    people = set(torch.load(ckpt, map_location="cpu", weights_only=False)["FaceDataModule"]["class_names"])
    all_pairs = read_lfw_pairs(data_dir / "lfw" / "pairs.txt")
    overlapping = _overlap(all_pairs, people)
    assert len(people) == 4 and len(overlapping) == 15  # View 2 holds few pairs of these four people
    # by default: one clear error saying how many pairs, which set, and the three choices
    message = expect_input_error(capsys, evaluate_cli.main, _eval_cfg(tmp_path, f"ckpt={ckpt}", "eval=lfw"))
    assert f"{len(overlapping)} of 6000 pairs" in message and "lfw" in message
    for choice in ("eval=lfw_view1", "eval.exclude_training_identities=true", "eval.allow_identity_overlap=true"):
        assert choice in message
    # excluded: exactly the disjoint pairs are scored, and the result says how many were dropped
    subset = first_per_fold(all_pairs, PER_FOLD)
    dropped = _overlap(subset, people)
    assert 0 < len(dropped) < len(subset)
    metrics = evaluate_cli.main(_eval_cfg(tmp_path, f"ckpt={ckpt}", "eval=lfw", f"eval.max_pairs_per_fold={PER_FOLD}",
                                          "eval.exclude_training_identities=true"))
    assert metrics["n_pairs"] == len(subset) - len(dropped)
    assert metrics["excluded_pairs"] == len(dropped) and metrics["pairs_with_training_identities"] == len(dropped)
    assert not metrics["identity_overlap_allowed"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["excluded_pairs"] == len(dropped) and saved["sets"]["lfw"]["n_pairs"] == metrics["n_pairs"]
    assert "excluded" in capsys.readouterr().out
    # allowed: every pair is scored and marked
    metrics = evaluate_cli.main(_eval_cfg(tmp_path, f"ckpt={ckpt}", "eval=lfw", f"eval.max_pairs_per_fold={PER_FOLD}",
                                          "eval.allow_identity_overlap=true"))
    assert metrics["n_pairs"] == len(subset) and metrics["identity_overlap_allowed"]
    assert metrics["pairs_with_training_identities"] == len(dropped)
    assert "OVERLAP" in capsys.readouterr().out
