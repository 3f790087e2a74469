"""Published LFW ROC files and the ROC figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from stn_face.evaluation.plots import load_published_rocs, plot_roc, read_published_roc
from stn_face.evaluation.verification import auc, roc_curve


@pytest.mark.data
def test_every_published_roc_loads(lfw_dir: Path) -> None:
    curves = load_published_rocs(lfw_dir / "published-roc")
    assert len(curves) == len(list((lfw_dir / "published-roc").glob("*.txt"))) == 6
    for name, (fpr, tpr) in curves.items():
        assert len(fpr) == len(tpr) >= 500, name
        assert np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr)), name
        assert fpr.min() >= 0 and fpr.max() <= 1 and tpr.min() >= 0 and tpr.max() <= 1, name
        assert np.all(np.diff(fpr) >= 0), name  # sorted by FPR
        assert np.all(np.diff(tpr) >= 0), name  # and a valid ROC: TPR never falls
    # column order is TPR then FPR: strong methods have a high AUC, eigenfaces a weak one
    assert auc(*curves["dlib_LFW_roc_curve"]) > 0.99
    assert auc(*curves["YiSun_DeepID2"]) > 0.99
    assert 0.55 < auc(*curves["eigenfaces-original-roc"]) < 0.75
    assert len(curves["eigenfaces-original-roc"][0]) == 1000 - 130  # NaN rows dropped


def test_read_published_roc_columns_nan_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "method.txt"
    path.write_text("1.0 1.0\n0.9 0.1\n0.0 NaN\n\n0.5 0.0\n")
    fpr, tpr = read_published_roc(path)
    assert fpr.tolist() == [0.0, 0.1, 1.0] and tpr.tolist() == [0.5, 0.9, 1.0]
    path.write_text("0.9 0.1\n0.8\n")
    with pytest.raises(ValueError, match=rf"{path}:2"):
        read_published_roc(path)
    path.write_text("90 10\n")
    with pytest.raises(ValueError, match="outside"):
        read_published_roc(path)


def assert_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 10_000
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    curves = {}
    for separation in (1.0, 2.0, 3.0):
        scores = np.r_[rng.normal(separation, 1, 3000), rng.normal(0, 1, 3000)]
        fpr, tpr, _ = roc_curve(scores, labels)
        curves[f"d={separation}"] = (fpr, tpr)
    published = {"diagonal": (np.linspace(0, 1, 11), np.linspace(0, 1, 11))}
    log_png = plot_roc(curves, tmp_path / "figs" / "roc.png", published=published, title="test")
    linear_png = plot_roc(curves, tmp_path / "roc_linear.png", log_fpr=False)
    assert_png(log_png)
    assert_png(linear_png)


@pytest.mark.data
def test_plot_with_real_published_curves(lfw_dir: Path, tmp_path: Path) -> None:
    published = load_published_rocs(lfw_dir / "published-roc")
    mine = {"mine": published.pop("high_dim_LBP_unrestricted_cvpr13")}
    assert_png(plot_roc(mine, tmp_path / "roc.png", published=published))


@pytest.mark.data
def test_published_curves_are_labelled_by_method_and_paper(lfw_dir: Path) -> None:
    import re

    from stn_face.evaluation.plots import published_label

    for path in (lfw_dir / "published-roc").glob("*.txt"):
        label = published_label(path.stem)
        assert label != path.stem and re.search(r"\((.+), (19|20)\d\d\)$", label), label
    assert published_label("my_method_2024") == "my method 2024"  # unknown files: their name in words
