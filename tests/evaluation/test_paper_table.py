"""The papers' results row, and stn-face-eval scoring several sets (a pair set and IJB) in one command."""

from __future__ import annotations

import json

import pytest

from stn_face.evaluation.paper_table import paper_table
from tests.data.test_ijb_sets import _make_release
from tests.helpers import run_cli


def test_row_in_the_papers_order_with_tar_for_template_sets():
    sets = {"ijbc": {"tar_at_far": {"1e-4": 0.9612, "1e-5": 0.9}, "accuracy_mean": 0.5},
            "cplfw": {"accuracy_mean": 0.9211}, "lfw": {"accuracy_mean": 0.99533},
            "agedb_30": {"accuracy_mean": 0.9801}, "mine": {"accuracy_mean": 0.5},
            "ijbb": {"tar_at_far": {"1e-4": 0.5}, "tar_at_far_measurable": {"1e-4": {"pooled": False}}}}
    lines = paper_table(sets, label="r50").splitlines()
    assert lines[0] == "|  | LFW | AgeDB-30 | CPLFW | IJB-B (TAR@FAR=1e-4) | IJB-C (TAR@FAR=1e-4) | mine |"
    assert lines[2] == "| r50 | 99.53 | 98.01 | 92.11 | 50.00 (not measurable) | 96.12 | 50.00 |"


@pytest.mark.slow
def test_eval_scores_a_pair_set_and_ijb_in_one_command(lfw_dir, checkpoints, tmp_path):
    _make_release(lfw_dir, tmp_path / "release")
    result = run_cli(["stn_face.cli.eval", f"ckpt={checkpoints['affine']}", "eval=lfw_view1", "eval.max_pairs_per_fold=20",
                      "+eval@extra_eval.ijbc=ijb", f"extra_eval.ijbc.root={tmp_path / 'release'}",
                      f"extra_eval.ijbc.prepared_root={tmp_path / 'prepared'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(record["sets"]) == {"lfw_view1", "ijbc"}
    assert record["sets"]["ijbc"]["n_pairs"] == 276 and record["sets"]["lfw_view1"]["n_pairs"] == 40
    assert (tmp_path / "run" / "roc_ijbc.png").exists() and (tmp_path / "run" / "roc_lfw_view1.png").exists()
    row = [line for line in result.stdout.splitlines() if line.startswith("| last.ckpt |")]
    header = [line for line in result.stdout.splitlines() if "IJB-C (TAR@FAR=1e-4)" in line]
    assert len(row) == 1 and header == ["|  | LFW View 1 (dev) | IJB-C (TAR@FAR=1e-4) |"]
