"""The results report over a fake Hydra multirun folder holding really computed metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from stn_face.cli.report import main
from stn_face.evaluation.artifacts import save_metrics_json, save_roc_npz
from stn_face.evaluation.report import find_runs
from stn_face.evaluation.verification import evaluate_verification, roc_curve

SEPARATIONS = {"identity": 1.0, "similarity": 1.5, "affine": 2.0, "projective": 2.5}


def scores_for(separation: float, seed: int, per: int = 300, folds: int = 10):
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(folds):
        scores += [rng.normal(separation, 1, per), rng.normal(0, 1, per)]
        labels += [np.ones(per, bool), np.zeros(per, bool)]
    return np.concatenate(scores), np.concatenate(labels), np.repeat(np.arange(folds), 2 * per)


def write_run(job: Path, transform: str, seed: int, layout: str) -> dict:
    """One evaluated job; ``layout`` varies how much Hydra left behind."""
    hydra = job / ".hydra"
    hydra.mkdir(parents=True)
    overrides = [f"transform={transform}", "localization=paper_a", f"seed={seed}"]
    if layout == "full":
        choices = {
            "transform": transform,
            "localization": "paper_a",
            "data": "casia_webface",
            "backbone": "paper_resnet",
            "hydra/launcher": "basic",
        }
        (hydra / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
        (hydra / "config.yaml").write_text(yaml.safe_dump({"transform": {"name": transform}}))
    elif layout == "overrides-only":
        (hydra / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "celeba_subset"}}))
    elif layout == "target-only":
        overrides = [f"seed={seed}"]
        config = {
            "model": {
                "transform": {"_target_": f"stn_face.geometry.{transform.title()}Transform"},
                "localization": {"name": "paper_b"},
            },
            "data": {"name": "lfw_view1"},
        }
        (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    lfw = scores_for(SEPARATIONS[transform], seed)
    ytf = scores_for(SEPARATIONS[transform] * 0.8, seed + 100, per=250)
    metrics = {"lfw": evaluate_verification(*lfw), "ytf": evaluate_verification(*ytf)}
    stale = evaluate_verification(*scores_for(0.1, seed + 200))  # an earlier validation: must lose
    if layout == "full" and transform == "similarity":  # stn-face-train's layout + callback files
        train_layout = {
            **metrics["lfw"],
            "eval": "lfw",
            "sets": metrics,
            "best": {"lfw": stale},
            "train": {"train/loss": 1.0},
            "global_step": 10,
        }
        save_metrics_json(job / "metrics.json", train_layout)
        save_metrics_json(job / "val_lfw_metrics.json", stale)
    elif layout == "target-only":  # only the verification callback's files
        save_metrics_json(job / "val_lfw_metrics.json", stale)
        save_metrics_json(job / "test_lfw_metrics.json", metrics["lfw"])
        save_metrics_json(job / "val_ytf_metrics.json", metrics["ytf"])
    else:
        save_metrics_json(job / "metrics.json", metrics)
    fpr, tpr, thresholds = roc_curve(*lfw[:2])
    save_roc_npz(job / "roc_lfw.npz", fpr, tpr, thresholds)
    return metrics


@pytest.fixture()
def multirun(tmp_path: Path):
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    layouts = ["full", "overrides-only", "target-only", "full"]
    expected = {}
    for job, (transform, layout) in enumerate(
        zip(["projective", "identity", "affine", "similarity"], layouts)
    ):
        expected[transform] = write_run(root / str(job), transform, seed=job, layout=layout)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    # a bare run without .hydra and with a flat summary: read as LFW, settings unknown
    bare = tmp_path / "multirun" / "loose"
    bare.mkdir()
    flat = evaluate_verification(*scores_for(0.2, 9))
    save_metrics_json(bare / "metrics.json", flat)
    expected["bare"] = {"lfw": flat}
    return tmp_path / "multirun", expected


def test_settings_from_every_layout(multirun) -> None:
    root, _ = multirun
    runs = {run.directory.name: run for run in find_runs(root)}
    assert set(runs) == {"0", "1", "2", "3", "loose"}
    assert (runs["0"].transform, runs["0"].localization, runs["0"].data) == (
        "projective",
        "paper_a",
        "casia_webface",
    )
    assert (runs["1"].transform, runs["1"].localization, runs["1"].data) == (
        "identity",
        "paper_a",
        "celeba_subset",
    )
    assert (runs["2"].transform, runs["2"].localization, runs["2"].data) == ("affine", "paper_b", "lfw_view1")
    assert runs["2"].overrides == ["seed=2"]
    assert (runs["loose"].transform, runs["loose"].data) == (None, None)
    assert set(runs["loose"].metrics) == {"lfw"} and runs["0"].roc_path("lfw") is not None
    assert set(runs["2"].metrics) == set(runs["3"].metrics) == {"lfw", "ytf"}


def test_report_cli_writes_table_and_roc(multirun, tmp_path: Path, capsys) -> None:
    root, expected = multirun
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out)]) == 0
    assert "table.md" in capsys.readouterr().out

    with (out / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # Table 3 order, unknown settings last
    assert [row["transform"] for row in rows] == ["identity", "similarity", "affine", "projective", ""]
    for row in rows:
        metrics = expected[row["transform"] or "bare"]
        lfw = metrics["lfw"]
        assert float(row["lfw_acc_mean"]) == pytest.approx(100 * lfw["accuracy_mean"])
        assert float(row["lfw_acc_std"]) == pytest.approx(100 * lfw["accuracy_std"])
        assert float(row["lfw_auc"]) == pytest.approx(lfw["auc"])
        assert float(row["lfw_eer"]) == pytest.approx(100 * lfw["eer"])
        assert float(row["lfw_tar_at_far_1e-3"]) == pytest.approx(100 * lfw["tar_at_far"]["1e-3"])
        if "ytf" in metrics:
            assert float(row["ytf_acc_mean"]) == pytest.approx(100 * metrics["ytf"]["accuracy_mean"])
        else:
            assert row["ytf_acc_mean"] == ""
    # accuracies grow with the separation given to each transform
    accuracies = [float(row["lfw_acc_mean"]) for row in rows[:4]]
    assert accuracies == sorted(accuracies) and 65 < accuracies[0] < accuracies[-1] < 99

    table = (out / "table.md").read_text()
    first = expected["identity"]["lfw"]
    # an identity transformer has no localization net: its column says so, whatever the config group
    assert f"| identity | - | celeba_subset | {100 * first['accuracy_mean']:.2f} ± " in table
    assert "| similarity | paper_a | " in table
    assert "98.01 / 93.4" in table and "99.24 / 94.6" in table and "population std" in table
    image = imread(out / "roc.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.01


def test_report_empty_folder(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err


@pytest.mark.data
def test_report_with_published_curves(multirun, lfw_dir: Path, tmp_path: Path) -> None:
    root, _ = multirun
    assert (
        main([str(root), "--out", str(tmp_path / "out"), "--published", str(lfw_dir / "published-roc")]) == 0
    )
    assert (tmp_path / "out" / "roc.png").stat().st_size > 20_000


def test_curve_labels_name_settings_and_folders_only_where_needed(tmp_path: Path) -> None:
    from stn_face.evaluation.report import Run, curve_labels

    def run(folder: str, transform: str) -> Run:
        return Run(tmp_path / folder, {}, transform, "conv3_fc1", "celeba_subset")

    runs = [run("clean/identity", "identity"), run("clean/projective", "projective"),
            run("misaligned/projective", "projective")]
    assert curve_labels(runs, tmp_path) == [
        "identity / celeba_subset",  # no localization net: none named
        "projective / conv3_fc1 / celeba_subset (clean/projective)",
        "projective / conv3_fc1 / celeba_subset (misaligned/projective)",
    ]
