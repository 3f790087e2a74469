"""Seed grouping and paired comparisons of stn-face-report over run folders holding really scored pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from stn_face.cli.report import main
from stn_face.evaluation.artifacts import metrics_record, save_roc_npz, write_metrics
from stn_face.evaluation.report import find_runs
from stn_face.evaluation.study import group_by_seed, median_seed, paired_comparisons, row_summaries
from stn_face.evaluation.verification import ScoredPairs, evaluate_verification

LABELS = np.tile(np.repeat([True, False], 300), 10)  # 6,000 pairs in 10 folds of 300 + 300, like View 2
FOLDS = np.repeat(np.arange(10), 600)
SEPARATION = {("clean", "identity"): 1.0, ("clean", "projective"): 1.4, ("misaligned", "identity"): 0.6,
              ("misaligned", "projective"): 0.6}


def write_run(root: Path, study: str, transform: str, seed: int) -> dict:
    job = root / study / transform / f"seed{seed}"
    (job / ".hydra").mkdir(parents=True)
    experiment = "cpu_celeba" if study == "clean" else "cpu_celeba_misaligned"
    overrides = [f"experiment={experiment}", f"transform={transform}", f"seed={seed}", "paths.log_dir=logs/x"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    rng = np.random.default_rng(seed * 10 + len(transform) + len(study))
    scores = np.round(rng.normal(LABELS * SEPARATION[study, transform], 1.0), 6)
    metrics = evaluate_verification(scores, LABELS, FOLDS)
    write_metrics(job, metrics_record({"lfw": metrics}, "lfw", kind="train"))
    pairs = ScoredPairs(scores, LABELS, FOLDS)
    save_roc_npz(job / "roc_lfw.npz", *pairs.roc(), pairs=pairs)
    return metrics


@pytest.fixture()
def study(tmp_path: Path):
    root = tmp_path / "cpu_celeba"
    metrics = {(s, t, seed): write_run(root, s, t, seed)
               for (s, t) in SEPARATION for seed in (42, 43, 44)}
    # the same row once more, but another setting (a longer budget): must not join the seed group
    job = root / "long" / "seed42"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["experiment=cpu_celeba", "transform=identity", "seed=42", "paths.log_dir=logs/x", "trainer.max_steps=900"]))
    scores = np.round(np.random.default_rng(0).normal(LABELS * 1.2, 1.0), 6)
    write_metrics(job, metrics_record({"lfw": evaluate_verification(scores, LABELS, FOLDS)}, "lfw", kind="train"))
    return root, metrics


def test_runs_differing_only_in_seed_form_one_row(study) -> None:
    root, metrics = study
    rows = group_by_seed(find_runs(root), root)
    assert [r.label for r in rows] == ["clean/identity", "clean/projective", "long",
                                       "misaligned/identity", "misaligned/projective"]
    assert rows[0].seeds == [42, 43, 44] and rows[2].seeds == [42]
    summaries = {s["row"]: s for s in row_summaries(rows)}
    accs = [100 * metrics["clean", "projective", seed]["accuracy_mean"] for seed in (42, 43, 44)]
    acc = summaries["clean/projective"]["acc"]
    assert acc["mean"] == pytest.approx(np.mean(accs)) and acc["std"] == pytest.approx(np.std(accs, ddof=1))
    assert list(acc["values"].values()) == pytest.approx(accs)
    aucs = [metrics["clean", "projective", seed]["auc"] for seed in (42, 43, 44)]
    assert summaries["clean/projective"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    tars = [100 * metrics["clean", "projective", seed]["tar_at_far"]["1e-3"] for seed in (42, 43, 44)]
    assert summaries["clean/projective"]["tar"]["std"] == pytest.approx(np.std(tars, ddof=1))
    assert summaries["long"]["acc"]["std"] is None
    middle = sorted((metrics["clean", "identity", s]["accuracy_mean"], s) for s in (42, 43, 44))[1][1]
    assert median_seed(rows[0]) == middle


def test_each_learned_row_is_compared_with_its_own_identity_row(study) -> None:
    root, metrics = study
    comparisons = {c["row"]: c for c in paired_comparisons(group_by_seed(find_runs(root), root), n_boot=2000)}
    assert set(comparisons) == {"clean/projective", "misaligned/projective"}
    clean = comparisons["clean/projective"]
    assert clean["reference"] == "clean/identity" and clean["seeds"] == [42, 43, 44]
    # equal-sized folds: the paired difference is the difference of the fold-mean accuracies
    expected = [metrics["clean", "projective", s]["accuracy_mean"] - metrics["clean", "identity", s]["accuracy_mean"]
                for s in (42, 43, 44)]
    assert clean["per_seed"] == pytest.approx(expected, abs=1e-12)
    assert clean["difference"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert clean["difference"] > 0.05 and clean["distinguishable"]  # separation 1.4 vs 1.0: about +8 points
    same = comparisons["misaligned/projective"]  # the same separation: no real difference
    assert same["ci_seeds_pairs"][0] < 0 < same["ci_seeds_pairs"][1] and not same["distinguishable"]
    # a family of two: the smaller p doubled, the larger kept (never below the smaller adjusted one)
    assert clean["p_holm"] == pytest.approx(2 * clean["p_seeds_pairs"]) and clean["distinguishable_holm"]
    assert same["p_holm"] == pytest.approx(max(same["p_seeds_pairs"], clean["p_holm"]))
    assert not same["distinguishable_holm"]


def test_a_seed_free_reference_is_compared_with_every_seed(study) -> None:
    """An untrained network scored once (``"untrained": true``: no seed) is the reference of each seed of a
    trained row: the per-seed differences are each seed's accuracy minus the one reference accuracy."""
    root, metrics = study
    job = root / "clean" / "start_view"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=cpu_celeba", "transform=identity",
                                                                     "train=false"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 42}))  # the config's default seed
    scores = np.round(np.random.default_rng(5).normal(LABELS * 0.8, 1.0), 6)
    reference = evaluate_verification(scores, LABELS, FOLDS)
    write_metrics(job, metrics_record({"lfw": reference}, "lfw", kind="validate", untrained=True))
    pairs = ScoredPairs(scores, LABELS, FOLDS)
    save_roc_npz(job / "roc_lfw.npz", *pairs.roc(), pairs=pairs)
    rows = group_by_seed(find_runs(root), root)
    start = next(r for r in rows if r.label == "clean/start_view")
    assert start.seeds == [None]
    comparisons = paired_comparisons(rows, n_boot=500, extra=[("clean/projective", "clean/start_view"),
                                                              ("clean/start_view", "clean/identity")])
    forward, backward = comparisons[-2:]
    assert forward["seeds"] == backward["seeds"] == [42, 43, 44]
    expected = [metrics["clean", "projective", s]["accuracy_mean"] - reference["accuracy_mean"] for s in (42, 43, 44)]
    assert forward["per_seed"] == pytest.approx(expected, abs=1e-12)
    expected = [reference["accuracy_mean"] - metrics["clean", "identity", s]["accuracy_mean"] for s in (42, 43, 44)]
    assert backward["per_seed"] == pytest.approx(expected, abs=1e-12)
    assert forward["distinguishable"] is not None  # three trained seeds: a verdict
    # two untrained networks: no training noise, so one "seed" gets a verdict and a p-value
    job = root / "clean" / "plain"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["backbone=dlib_resnet", "eval=lfw"]))
    plain_scores = np.round(np.random.default_rng(6).normal(LABELS * 0.3, 1.0), 6)
    write_metrics(job, metrics_record({"lfw": evaluate_verification(plain_scores, LABELS, FOLDS)}, "lfw", kind="eval"))
    plain = ScoredPairs(plain_scores, LABELS, FOLDS)
    save_roc_npz(job / "roc_lfw.npz", *plain.roc(), pairs=plain)
    (both,) = paired_comparisons(group_by_seed(find_runs(root), root), n_boot=500,
                                 extra=[("clean/start_view", "clean/plain")])[-1:]
    assert both["seeds"] == [None] and both["difference"] > 0.05  # separation 0.8 against 0.3: +7 points
    assert both["distinguishable"] is True and both["p_seeds_pairs"] < 0.01 and both["p_holm"] is not None


def test_report_cli_writes_the_seed_tables_and_one_curve_per_row(study, tmp_path: Path, capsys) -> None:
    root, metrics = study
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--bootstrap", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "`clean/projective`" in printed and "95 % CI, seeds+pairs" in printed
    for name in ("table.md", "table.csv", "seeds.md", "seeds.csv", "paired.md", "paired.csv", "roc.png"):
        assert (out / name).is_file(), name
    with (out / "seeds.csv").open() as handle:
        seeds = {row["row"]: row for row in csv.DictReader(handle)}
    assert seeds["misaligned/identity"]["seeds"] == "42 43 44"
    assert float(seeds["clean/identity"]["acc_mean"]) == pytest.approx(
        np.mean([100 * metrics["clean", "identity", s]["accuracy_mean"] for s in (42, 43, 44)]))
    with (out / "paired.csv").open() as handle:
        paired = {row["row"]: row for row in csv.DictReader(handle)}
    assert paired["clean/projective"]["distinguishable"] == "True"
    assert paired["clean/projective"]["distinguishable_holm"] == "True"
    assert float(paired["misaligned/projective"]["p_holm"]) >= float(paired["misaligned/projective"]["p_seeds_pairs"])
    markdown = (out / "paired.md").read_text()
    assert "Distinguishable: the seeds+pairs interval excludes 0" in markdown
    assert "over the 2 comparisons of this table" in markdown and "| Holm p | after Holm |" in markdown
    with pytest.raises(SystemExit) as exit_info:
        main([str(root), "--out", str(out), "--bootstrap", "10"])
    assert exit_info.value.code == 2
    assert "too few resamples" in capsys.readouterr().err


def test_a_named_pair_of_rows_is_compared_too(study, tmp_path: Path, capsys) -> None:
    root, metrics = study
    rows = group_by_seed(find_runs(root), root)
    extra = paired_comparisons(rows, n_boot=1000, extra=[("clean/identity", "misaligned/identity")])[-1]
    assert (extra["row"], extra["reference"], extra["seeds"]) == ("clean/identity", "misaligned/identity", [42, 43, 44])
    expected = [metrics["clean", "identity", s]["accuracy_mean"] - metrics["misaligned", "identity", s]["accuracy_mean"]
                for s in (42, 43, 44)]
    assert extra["per_seed"] == pytest.approx(expected, abs=1e-12)
    assert extra["difference"] > 0.05 and extra["distinguishable"]  # separation 1.0 vs 0.6
    with pytest.raises(KeyError, match=r"'clean/landmarks'.*the rows are: clean/identity"):
        paired_comparisons(rows, extra=[("clean/landmarks", "clean/identity")])

    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--bootstrap", "1000", "--compare",
                 "clean/identity=misaligned/identity"]) == 0
    with (out / "paired.csv").open() as handle:
        paired = list(csv.DictReader(handle))
    assert [(r["row"], r["reference"]) for r in paired][-1] == ("clean/identity", "misaligned/identity")
    assert float(paired[-1]["difference"]) == pytest.approx(np.mean(expected), abs=1e-12)
    capsys.readouterr()
    for bad, message in ((["--compare", "clean/identity"], "ROW=REFERENCE"),
                         (["--compare", "clean/landmarks=clean/identity"], "names no row 'clean/landmarks'")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(root), "--out", str(tmp_path / "bad"), *bad])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # a bad --compare writes nothing
