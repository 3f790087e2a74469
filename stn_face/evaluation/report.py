"""Collect the ``metrics.json`` files of many runs into one table shaped like the paper's Table 3.

- Result files are read through :mod:`stn_face.evaluation.artifacts` (the owner of ``metrics.json``
  and ``roc_<set>.npz``). Accuracies are fractions in [0, 1].
- The run's settings come from the nearest ``.hydra/`` folder at or above the metrics file:
  ``hydra.yaml`` (``hydra.runtime.choices``), then ``overrides.yaml``, then ``config.yaml``
  (``transform.name`` or ``transform._target_``, ``localization``, ``data.name``). Missing fields
  show as ``-``.

Command: ``stn-face-report DIR [--out DIR] [--published DIR]`` (:mod:`stn_face.cli.report`) writes
``table.md``, ``table.csv`` and ``roc.png``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stn_face.evaluation.artifacts import METRICS_FILE, ROC_FILE, read_record, read_run_metrics
from stn_face.evaluation.tables import MISSING, mean_std, write_csv

__all__ = [
    "PAPER_TABLE3",
    "Run",
    "benchmark",
    "find_runs",
    "percent",
    "table_rows",
    "write_roc_figure",
    "write_table",
]


#: Published accuracies (%) of the paper's Table 3 (trained on CASIA-WebFace): transform -> (LFW, YTF).
PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "identity": (98.01, 93.4),
    "similarity": (98.87, 94.2),
    "affine": (99.02, 94.6),
    "projective": (99.24, 94.6),
}
_TRANSFORM_ORDER = list(PAPER_TABLE3)


@dataclass
class Run:
    """One evaluated run: where it is, its metrics per benchmark and the settings that produced it."""

    directory: Path
    metrics: dict[str, dict[str, Any]]
    transform: str | None = None
    localization: str | None = None
    data: str | None = None
    overrides: list[str] = field(default_factory=list)
    seed: int | None = None

    def roc_path(self, benchmark: str = "lfw") -> Path | None:
        path = self.directory / ROC_FILE.format(benchmark=benchmark)
        return path if path.is_file() else None


# --------------------------------------------------------------------------------------------------
# Hydra settings of a run


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None


def _hydra_dir(start: Path, stop: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".hydra").is_dir():
            return directory / ".hydra"
        if directory == stop:
            break
    return None


def _name_from_target(target: str) -> str:
    name = target.rsplit(".", 1)[-1]
    for suffix in ("Transform", "Dataset", "DataModule", "Net"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
    return name.lower()


def _find_key(node: Any, key: str, depth: int = 0) -> Any:
    """The value of ``key`` in a nested config: the top level first, then nested nodes in order."""
    if not isinstance(node, dict) or depth > 4:
        return None
    if key in node:
        return node[key]
    for value in node.values():
        found = _find_key(value, key, depth + 1)
        if found is not None:
            return found
    return None


def _from_config(config: Any, key: str) -> str | None:
    value = _find_key(config, key)
    use_target = key != "data"  # a data module's class name says nothing about the training set
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name_key in ("name", "family", "type"):
            if isinstance(value.get(name_key), str):
                return value[name_key]
        if use_target and isinstance(value.get("_target_"), str):
            return _name_from_target(value["_target_"])
    return None


def _parse_overrides(overrides: Any) -> dict[str, str]:
    parsed = {}
    for item in overrides or []:
        if isinstance(item, str) and "=" in item:
            key, value = item.split("=", 1)
            parsed[key.lstrip("+~").rsplit("/", 1)[-1]] = value
    return parsed


def _choice(group: str, choices: Mapping[str, Any], overrides: Mapping[str, str], config: Any) -> str | None:
    for key, value in choices.items():
        if key.rsplit("/", 1)[-1] == group and isinstance(value, str):
            return value
    if group in overrides:
        return overrides[group]
    return _from_config(config, group)


def _read_settings(run_dir: Path, root: Path) -> dict[str, Any]:
    hydra_dir = _hydra_dir(run_dir, root)
    if hydra_dir is None:
        return {"overrides": []}
    hydra_cfg = _load_yaml(hydra_dir / "hydra.yaml") or {}
    choices = (
        (((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {})
        if isinstance(hydra_cfg, dict)
        else {}
    )
    override_list = _load_yaml(hydra_dir / "overrides.yaml") or []
    overrides = _parse_overrides(override_list)
    config = _load_yaml(hydra_dir / "config.yaml") or {}
    seed = overrides.get("seed", config.get("seed") if isinstance(config, dict) else None)
    try:
        seed = None if seed is None else int(seed)
    except (TypeError, ValueError):
        seed = None
    return {
        "seed": seed,
        "transform": _choice("transform", choices, overrides, config),
        "localization": _choice("localization", choices, overrides, config),
        "data": _choice("data", choices, overrides, config),
        "overrides": [str(item) for item in override_list] if isinstance(override_list, list) else [],
    }


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder under ``root`` (a Hydra multirun folder or any folder) holding metrics files.

    A run folder is one holding ``metrics.json`` or ``*_metrics.json`` files (all merged, see
    :func:`~stn_face.evaluation.artifacts.read_metrics`); folders whose files hold no verification summary are left out.
    A network scored untrained (``"untrained": true``) has no seed: its result does not depend on one.
    """
    root = Path(root).resolve()
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob(f"*{METRICS_FILE}")):
        if path.is_file() and (path.name == METRICS_FILE or path.name.endswith(f"_{METRICS_FILE}")):
            by_folder.setdefault(path.parent, []).append(path)
    runs = []
    for folder, paths in sorted(by_folder.items()):
        records = {path: read_record(path) for path in paths}  # each file read once
        metrics = read_run_metrics(paths, records)
        if not metrics:
            continue
        settings = _read_settings(folder, root)
        if any(records[path].get("untrained") for path in paths if path.name == METRICS_FILE):
            settings["seed"] = None
        runs.append(
            Run(
                directory=folder,
                metrics=metrics,
                transform=settings.get("transform"),
                localization=settings.get("localization"),
                data=settings.get("data"),
                overrides=settings.get("overrides", []),
                seed=settings.get("seed"),
            )
        )
    return runs


# --------------------------------------------------------------------------------------------------
# The table


def _benchmark_key(run: Run, name: str) -> str | None:
    """The set shown in the ``name`` column: ``name`` itself, else the first set whose name starts with it."""
    if name in run.metrics:
        return name
    return next((key for key in run.metrics if key.startswith(name)), None)


def benchmark(run: Run, name: str) -> dict[str, Any] | None:
    """The metrics of the run's ``name`` set (``lfw``, ``ytf``; or the first set whose name starts with it)."""
    key = _benchmark_key(run, name)
    return None if key is None else run.metrics[key]


def percent(value: Any) -> float | None:
    """A fraction (or a figure already in %) as a percentage; None for missing, boolean or non-finite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return value * 100 if abs(value) <= 1 else value


def _sort_key(run: Run, root: Path) -> tuple:
    transform = (run.transform or "").lower()
    order = _TRANSFORM_ORDER.index(transform) if transform in _TRANSFORM_ORDER else len(_TRANSFORM_ORDER)
    return (order, transform, run.localization or "", run.data or "", str(run.directory.relative_to(root)))


def _other_sets(runs: Sequence[Run]) -> list[str]:
    """Sets any run scored beside those in its LFW and YTF columns (``cfp_fp``, ``agedb_30``, ... from ``.bin``
    files), sorted."""
    return sorted({name for run in runs for name in run.metrics
                   if name not in (_benchmark_key(run, "lfw"), _benchmark_key(run, "ytf"))})


def table_rows(runs: Sequence[Run], root: str | Path, far: str = "1e-3") -> list[dict[str, Any]]:
    """One dict per run with numeric columns (percentages) in Table 3 order, sorted by transform; every
    other set a run scored gets ``<set>_acc_mean`` / ``<set>_acc_std`` columns after them."""
    root = Path(root).resolve()
    others = _other_sets(runs)
    rows = []
    for run in sorted(runs, key=lambda r: _sort_key(r, root)):
        lfw = benchmark(run, "lfw") or {}
        ytf = benchmark(run, "ytf") or {}
        tar = (lfw.get("tar_at_far") or {}).get(far)
        measurable = ((lfw.get("tar_at_far_measurable") or {}).get(far) or {}).get("pooled", True)
        paper = PAPER_TABLE3.get((run.transform or "").lower(), (None, None))
        rows.append(
            {
                "transform": run.transform,
                "localization": _localization(run),
                "training_set": run.data,
                "lfw_acc_mean": percent(lfw.get("accuracy_mean")),
                "lfw_acc_std": percent(lfw.get("accuracy_std")),
                "lfw_acc_sem": percent(lfw.get("accuracy_sem")),
                "ytf_acc_mean": percent(ytf.get("accuracy_mean")),
                "ytf_acc_std": percent(ytf.get("accuracy_std")),
                "lfw_auc": lfw.get("auc"),
                "lfw_eer": percent(lfw.get("eer")),
                f"lfw_tar_at_far_{far}": percent(tar) if measurable else None,
                **{f"{name}_acc_{stat}": percent((run.metrics.get(name) or {}).get(f"accuracy_{stat}"))
                   for name in others for stat in ("mean", "std")},
                "paper_lfw": paper[0],
                "paper_ytf": paper[1],
                "run": str(run.directory.relative_to(root)) or ".",
                "overrides": " ".join(run.overrides),
            }
        )
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(rows: Sequence[Mapping[str, Any]], far: str) -> str:
    others = [key[: -len("_acc_mean")] for key in (rows[0] if rows else {})
              if key.endswith("_acc_mean") and key not in ("lfw_acc_mean", "ytf_acc_mean")]
    header = [
        "Transform",
        "Localization",
        "Training set",
        "LFW acc (%)",
        "YTF acc (%)",
        "LFW AUC",
        "LFW EER (%)",
        f"TAR@FAR={far} (%)",
        *(f"{name} acc (%)" for name in others),
        "Paper LFW / YTF (%)",
        "Run",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        paper = (
            f"{row['paper_lfw']:.2f} / {row['paper_ytf']:.1f}" if row["paper_lfw"] is not None else MISSING
        )
        cells = [
            _fmt(row["transform"]),
            _fmt(row["localization"]),
            _fmt(row["training_set"]),
            mean_std(row["lfw_acc_mean"], row["lfw_acc_std"]),
            mean_std(row["ytf_acc_mean"], row["ytf_acc_std"]),
            _fmt(row["lfw_auc"], 4),
            _fmt(row["lfw_eer"]),
            _fmt(row[f"lfw_tar_at_far_{far}"]),
            *(mean_std(row[f"{name}_acc_mean"], row[f"{name}_acc_std"]) for name in others),
            paper,
            f"`{row['run']}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        "\nAccuracy: mean ± population std (ddof=0) over the 10 folds, threshold chosen on the other 9 "
        f"folds. AUC, EER and TAR@FAR={far} on all pairs pooled (LFW View 2: 3,000 negatives; FAR=1e-3 is "
        "not measurable within one 300-negative fold). Paper: Table 3, trained on CASIA-WebFace.\n"
    )
    return "\n".join(lines) + "\n" + notes


def write_table(
    rows: Sequence[Mapping[str, Any]], out_dir: str | Path, far: str = "1e-3"
) -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "table.md"
    md_path.write_text(_markdown(rows, far))
    return md_path, write_csv(out_dir / "table.csv", rows, empty_header=["transform"])


def _localization(run: Run) -> str | None:
    """The localization setting, or "-" for an identity transformer (it has no localization net)."""
    return "-" if (run.transform or "").lower() == "identity" else run.localization


def _run_label(run: Run, root: Path) -> str:
    parts = [p for p in (run.transform, _localization(run), run.data) if p and p != "-"]
    return " / ".join(parts) if parts else str(run.directory.relative_to(root)) or "."


def curve_labels(runs: Sequence[Run], root: str | Path) -> list[str]:
    """A legend label per run: its settings, plus its folder where several runs share the settings."""
    root = Path(root).resolve()
    labels = [_run_label(run, root) for run in runs]
    repeats = Counter(labels)
    return [f"{label} ({run.directory.relative_to(root)})" if repeats[label] > 1 else label
            for label, run in zip(labels, runs, strict=True)]


def write_roc_figure(
    runs: Sequence[Run],
    path: str | Path,
    root: str | Path,
    benchmark: str = "lfw",
    published: Mapping[str, Any] | None = None,
) -> Path | None:
    """One ROC curve per run that has ``roc_<benchmark>.npz``; None when no run has one."""
    from stn_face.evaluation.artifacts import load_roc_npz
    from stn_face.evaluation.plots import plot_roc

    root = Path(root).resolve()
    drawn = [(run, run.roc_path(benchmark)) for run in sorted(runs, key=lambda r: _sort_key(r, root))]
    drawn = [(run, roc_path) for run, roc_path in drawn if roc_path is not None]
    labels = curve_labels([run for run, _ in drawn], root)
    curves = {label: load_roc_npz(roc_path) for label, (_, roc_path) in zip(labels, drawn, strict=True)}
    if not curves:
        return None
    return plot_roc(curves, path, published=published, title=f"{benchmark.upper()} ROC")
