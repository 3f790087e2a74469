"""The one owner of a run's result files: ``metrics.json`` and ``roc_<set>.npz`` / ``roc_<set>.png`` (written,
read, and the ``metrics.json`` record built for every kind of run).

``metrics.json`` (format 1), written the same way by training, by ``train=false`` evaluation and by
``stn-face-eval``::

    {
      "format": 1,
      "kind": "train" | "validate" | "eval",
      "eval": "<primary set>",            # the set named by the `eval` config
      ...the primary set's metrics...     # accuracy_mean, auc, tar_at_far, n_pairs, step, ... at the top
      "sets": {"<set>": {...}, ...},      # every scored set, the primary one included
      "best": {"<set>": {...}},           # training only: the best validation per set
      "step": N,                          # the optimiser step of the weights that were scored
      ...                                 # command specific: train, skipped_steps, ckpt, embeddings, flip
    }

Accuracies are fractions in [0, 1]; NaN/inf are written as ``null`` (strict JSON). :func:`read_metrics`
reads this layout, and the layouts of files written before format 1 (``{"lfw": {...}}``, flat summaries,
the verification callback's old ``<stage>_<set>_metrics.json``), so older run folders still report.
Every record is built by :func:`run_record` and every reader goes through :func:`read_record`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stn_face.evaluation.verification import ScoredPairs
from stn_face.files import atomic_write

METRICS_FILE = "metrics.json"
#: ROC file name pattern beside ``metrics.json``; ``{benchmark}`` is e.g. ``lfw`` or ``ytf``.
ROC_FILE = "roc_{benchmark}.npz"
FORMAT = 1

_STAGES = ("test", "val", "validate")
_NOT_SETS = ("sets", "best", "train")


# ---------------------------------------------------------------------------------------- writing
def json_ready(value: Any) -> Any:
    """Numpy scalars/arrays to Python, NaN/inf to None, so the file is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist"):
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_record(sets: Mapping[str, Mapping[str, Any]], primary: str | None, kind: str,
                   **extra: Any) -> dict[str, Any]:
    """The ``metrics.json`` content: ``primary``'s metrics at the top level, every set under ``sets``.

    ``primary`` must be one of ``sets`` (or None when nothing was scored); ``extra`` keys (``best``,
    ``step``, ``train``, ``ckpt``, ...) are added last and never hide a set's metrics.
    """
    if primary is not None and primary not in sets:
        raise KeyError(f"primary set {primary!r} was not scored (scored: {sorted(sets)})")
    record: dict[str, Any] = {"format": FORMAT, "kind": kind}
    if primary is not None:
        record["eval"] = primary
        record.update(sets[primary])
    record["sets"] = {name: dict(values) for name, values in sets.items()}
    record.update(extra)
    return record


def run_record(kind: str, sets: Mapping[str, Mapping[str, Any]], order: Sequence[str], *,
               step: int | None = None, best: Mapping[str, Any] | None = None,
               train: Mapping[str, float] | None = None, skipped_steps: int | None = None,
               **extra: Any) -> dict[str, Any]:
    """The ``metrics.json`` record of any run: the one place that says which fields each kind of run has.

    ``kind``: ``train`` (a training run, also the validation callback's interim file), ``validate``
    (``train=false``: a checkpoint scored by the training job) or ``eval`` (``stn-face-eval``). The
    primary set is the first name of ``order`` that was scored. Training and validation records carry
    ``step`` and ``global_step`` (the optimiser step of the scored weights) and ``skipped_steps``;
    training records the best validation per set (``best``) and, when given, the last logged training
    values (``train``). ``eval`` records take the step from the set's own metrics (a checkpoint's step,
    none for embeddings). ``extra`` keys are added last.
    """
    if kind not in ("train", "validate", "eval"):
        raise ValueError(f"kind must be train, validate or eval, got {kind!r}")
    primary = next((name for name in order if name in sets), None)
    fields: dict[str, Any] = {}
    if kind == "train":
        fields["best"] = dict(best or {})
        if train is not None:
            fields["train"] = dict(train)
    if kind != "eval":
        fields.update(step=step, global_step=step, skipped_steps=int(skipped_steps or 0))
    fields.update(extra)
    return metrics_record(sets, primary, kind=kind, **fields)


def save_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` (a :func:`metrics_record`, or any mapping) as strict JSON, atomically."""
    path = Path(path)
    text = json.dumps(json_ready(metrics), indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as handle:
        handle.write(text)
    return path


def write_metrics(output_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """``<output_dir>/metrics.json``."""
    return save_metrics_json(Path(output_dir) / METRICS_FILE, record)


def write_roc(output_dir: str | Path, name: str, pairs: ScoredPairs, metrics: Mapping[str, Any],
              log_fpr: bool = True, published_roc_dir: str | Path | None = None, plot: bool = True,
              title: str | None = None) -> list[Path]:
    """``roc_<name>.npz`` (the ROC and every scored pair) and (``plot``) ``roc_<name>.png`` beside
    metrics.json; the published LFW curves are drawn behind the model's for LFW sets when
    ``published_roc_dir`` exists. Returns the files."""
    out = Path(output_dir)
    fpr, tpr = pairs.roc()
    written = [save_roc_npz(out / ROC_FILE.format(benchmark=name), fpr, tpr, pairs=pairs)]
    if not plot or np.asarray(fpr).size == 0:
        return written
    from stn_face.evaluation.plots import load_published_rocs, plot_roc

    published = None
    if published_roc_dir and name.startswith("lfw") and Path(str(published_roc_dir)).is_dir():
        published = load_published_rocs(published_roc_dir)
    auc = metrics.get("auc")
    label = f"{name} (acc {100 * metrics['accuracy_mean']:.2f}%, AUC {float('nan') if auc is None else auc:.4f})"
    written.append(plot_roc({label: (fpr, tpr)}, out / f"roc_{name}.png", log_fpr=log_fpr, published=published,
                            title=title or f"{name} ROC"))
    return written


# ------------------------------------------------------------------------------------- ROC files
def save_roc_npz(path: str | Path, fpr: Any, tpr: Any, thresholds: Any | None = None,
                 pairs: ScoredPairs | None = None) -> Path:
    """Write a ROC as ``.npz`` with arrays ``fpr``, ``tpr`` (and ``thresholds`` when given); with ``pairs``
    also ``scores``, ``labels`` and ``folds``, from which every metric (and a paired comparison with
    another model on the same pairs) can be recomputed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"fpr": np.asarray(fpr, dtype=np.float64), "tpr": np.asarray(tpr, dtype=np.float64)}
    if thresholds is not None:
        arrays["thresholds"] = np.asarray(thresholds, dtype=np.float64)
    if pairs is not None:
        arrays.update(scores=np.asarray(pairs.scores, dtype=np.float64), labels=np.asarray(pairs.labels, dtype=bool),
                      folds=np.asarray(pairs.folds, dtype=np.int16))
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_roc_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(fpr, tpr)`` from a file written by :func:`save_roc_npz`."""
    with np.load(path) as data:
        return np.asarray(data["fpr"]), np.asarray(data["tpr"])


def load_pair_scores(path: str | Path) -> ScoredPairs | None:
    """The scored pairs stored in a ROC file by :func:`save_roc_npz`, or None for a file without them
    (written before they were stored)."""
    with np.load(path) as data:
        if "scores" not in data.files:
            return None
        return ScoredPairs(np.asarray(data["scores"]), np.asarray(data["labels"]).astype(bool),
                           np.asarray(data["folds"]).astype(np.int64))


# ---------------------------------------------------------------------------------------- reading
def _file_benchmark(path: Path) -> tuple[str | None, str | None]:
    """``(stage, benchmark)`` from a file name ``[<stage>_]<benchmark>_metrics.json`` (None if absent)."""
    stem = path.name[: -len(METRICS_FILE)].rstrip("_")
    if not stem:
        return None, None
    stage, _, rest = stem.partition("_")
    return (stage, rest or None) if stage in _STAGES else (None, stem)


def read_record(path: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """The whole JSON object of a metrics file (a :func:`run_record`: top-level fields included);
    ``{}`` for an absent file with ``missing_ok``."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def read_metrics(path: str | Path, record: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """A metrics file as ``{set: summary}``; ``record``: the file's :func:`read_record`, when read already.

    Format 1 (see the module docstring) gives its ``sets``. Older files: ``{"lfw": summary, "ytf":
    summary}``; a flat summary (set from its ``"eval"`` / ``"benchmark"`` field, else from a file name
    ``[<stage>_]<set>_metrics.json``, else ``lfw``); logged keys like ``"lfw/accuracy_mean"``.
    """
    path = Path(path)
    raw = read_record(path) if record is None else record
    result: dict[str, dict[str, Any]] = {}
    sets = raw.get("sets")
    if isinstance(sets, dict):
        result.update({str(k): v for k, v in sets.items() if isinstance(v, dict)})
    if raw.get("format") == FORMAT:
        return result
    if "accuracy_mean" in raw:
        name = raw.get("eval") or raw.get("benchmark") or _file_benchmark(path)[1] or "lfw"
        result.setdefault(str(name), raw)
    for key, value in raw.items():
        if key in _NOT_SETS:
            continue
        if isinstance(value, dict) and "accuracy_mean" in value:
            result.setdefault(key, value)
        elif "/" in key:
            benchmark, name = key.rsplit("/", 1)
            result.setdefault(benchmark, {})[name] = value
    return result


def read_run_metrics(paths: Sequence[Path], records: Mapping[Path, dict[str, Any]] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """Merge a run folder's metrics files: ``metrics.json`` and old ``test_*`` over old ``val_*`` ones
    (``records``: path -> :func:`read_record` of the files read already)."""

    def rank(path: Path) -> int:
        stage = _file_benchmark(path)[0]
        return 0 if stage in ("val", "validate") else 1

    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(paths, key=lambda p: (rank(p), p.name)):
        merged.update(read_metrics(path, (records or {}).get(path)))
    return merged


# ---------------------------------------------------------------------------------------- printing
def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f} %"


def format_table(metrics: Mapping[str, Any]) -> str:
    """A terminal table of one set's metrics (a :func:`metrics_record` or one entry of its ``sets``)."""
    n_pairs, skipped = metrics.get("n_pairs"), metrics.get("skipped_pairs", 0)
    rows = [
        ("eval set", (f"{metrics.get('eval')} ({Path(str(metrics.get('pairs_file'))).name}: {n_pairs} pairs, "
                      f"{metrics.get('n_same')} same / {metrics.get('n_diff')} different)")),
        ("accuracy", f"{_pct(metrics.get('accuracy_mean'))} ± {_pct(metrics.get('accuracy_std'))}"),
        ("AUC", "n/a (one class only)" if metrics.get("auc") is None else f"{metrics['auc']:.4f}"),
        ("EER", "n/a (one class only)" if metrics.get("eer") is None else _pct(metrics["eer"])),
    ]
    for far, tar in (metrics.get("tar_at_far") or {}).items():
        rows.append((f"TAR@FAR={far}", _pct(tar)))
    if metrics.get("best_threshold") is not None:
        rows.append(("best threshold", f"{metrics['best_threshold']:.4f}"))
    if skipped:
        rows.append(("skipped pairs", f"{skipped} of {skipped + (n_pairs or 0)} (images/videos missing)"))
    if metrics.get("max_pairs_per_fold") is not None:
        rows.append(("limited", f"first {metrics['max_pairs_per_fold']} same + different pairs of every fold only "
                                "(eval.max_pairs_per_fold): not the whole protocol"))
    if metrics.get("excluded_pairs"):
        rows.append(("excluded", f"{metrics['excluded_pairs']} pairs with training identities "
                                 "(eval.exclude_training_identities)"))
    elif metrics.get("pairs_with_training_identities"):
        rows.append(("OVERLAP", f"{metrics['pairs_with_training_identities']} pairs involve training identities "
                                "(eval.allow_identity_overlap): not a verification result"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
