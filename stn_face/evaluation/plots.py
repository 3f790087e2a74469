"""ROC figures, and the ROC curves published on the LFW results page.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch), so plotting works headless and inside training processes.

Published curves (``$STN_FACE_DATA/lfw/published-roc/*.txt``) hold two whitespace-separated columns
per line: **true positive rate, then false positive rate**. The files differ in point count (600 to
6,002) and order (some start at (0, 0), others at (1, 1)); ``eigenfaces-original-roc.txt`` starts
with 130 rows whose FPR is ``NaN``. :func:`read_published_roc` drops rows with NaN and sorts the
points by FPR (then TPR).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stn_face.errors import MissingInputError

__all__ = ["PUBLISHED_LABELS", "load_published_rocs", "plot_roc", "published_label", "read_published_roc"]

Curve = tuple[np.ndarray, np.ndarray]


def read_published_roc(path: str | Path) -> Curve:
    """Read one published ROC file (columns TPR then FPR) as ``(fpr, tpr)`` sorted by FPR.

    Rows holding NaN are dropped; a line that is not two numbers raises ``ValueError`` naming the
    file and line.
    """
    path = Path(path)
    rows = []
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                tpr, fpr = (float(field) for field in fields)
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: expected two numbers 'tpr fpr', got {line.strip()!r}"
                ) from None
            rows.append((fpr, tpr))
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    data = data[~np.isnan(data).any(axis=1)]
    if data.size == 0:
        raise ValueError(f"{path}: no ROC points (after dropping NaN rows)")
    if data.min() < 0 or data.max() > 1:
        raise ValueError(f"{path}: rates outside [0, 1]; expected two columns of rates 'tpr fpr'")
    data = data[np.lexsort((data[:, 1], data[:, 0]))]
    return data[:, 0], data[:, 1]


#: The method and paper (year) of each published curve of the LFW results page, by file stem.
PUBLISHED_LABELS = {
    "YiSun_DeepID2": "DeepID2 (Sun et al., 2014)",
    "deepface_ensemble": "DeepFace ensemble (Taigman et al., 2014)",
    "deepid2plus_arxiv1412.1265": "DeepID2+ (Sun et al., 2015)",
    "dlib_LFW_roc_curve": "dlib ResNet (King, 2017)",
    "eigenfaces-original-roc": "Eigenfaces (Turk and Pentland, 1991)",
    "high_dim_LBP_unrestricted_cvpr13": "High-dim LBP (Chen et al., 2013)",
}


def published_label(stem: str) -> str:
    """A reader's label for a published ROC file: method and paper (year), else the file name in words."""
    return PUBLISHED_LABELS.get(stem, stem.replace("_", " ").replace("-", " "))


def load_published_rocs(directory: str | Path) -> dict[str, Curve]:
    """Every ``*.txt`` ROC in ``directory``, keyed by file stem, in name order (:func:`plot_roc` labels
    them by method and paper)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingInputError(f"published ROC folder not found: {directory}")
    return {path.stem: read_published_roc(path) for path in sorted(directory.glob("*.txt"))}


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    log_fpr: bool = True,
    published: Mapping[str, tuple[Any, Any]] | None = None,
    title: str = "ROC",
    min_fpr: float | None = None,
    dpi: int = 120,
) -> Path:
    """Draw ROC curves (label -> (fpr, tpr)) and write them to ``path`` (PNG by suffix).

    Own curves are solid, ``published`` ones dashed and thinner. With ``log_fpr`` the FPR axis is
    logarithmic: points at FPR=0 cannot be drawn and are left out, and the axis starts at
    ``min_fpr`` (default: the power of ten at or below the smallest positive FPR of all curves).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.4, 5.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)

    groups = [(dict(curves), {"linewidth": 1.8, "linestyle": "-"})]
    if published:
        groups.append(({published_label(k): v for k, v in published.items()},
                       {"linewidth": 1.0, "linestyle": "--", "alpha": 0.8}))
    smallest = 1.0
    for group, style in groups:
        for label, (fpr, tpr) in group.items():
            fpr = np.asarray(fpr, dtype=np.float64)
            tpr = np.asarray(tpr, dtype=np.float64)
            if log_fpr:
                keep = fpr > 0
                fpr, tpr = fpr[keep], tpr[keep]
                if fpr.size:
                    smallest = min(smallest, float(fpr.min()))
            if fpr.size:
                axes.plot(fpr, tpr, label=label, **style)

    if log_fpr:
        axes.set_xscale("log")
        low = min_fpr if min_fpr is not None else 10 ** np.floor(np.log10(smallest))
        axes.set_xlim(low, 1.0)
    else:
        axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.005)
    axes.set_xlabel("false positive rate" + (" (log scale)" if log_fpr else ""))
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        # below the axes, where it hides no curve; published curves are said to be LFW View 2 results
        if published:
            handles.append(Line2D([], [], linestyle="none"))
            labels.append("dashed: published LFW View 2 results (LFW results page)")
        legend = figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                               fontsize="small", frameon=False)
        figure.savefig(path, dpi=dpi, bbox_inches="tight", bbox_extra_artists=[legend])
    else:
        figure.tight_layout()
        figure.savefig(path, dpi=dpi)
    return path
