"""Rows of a study: runs that differ only in ``seed``, summarised across seeds and compared pairwise.

- :func:`group_by_seed`: runs whose overrides are equal once ``seed=`` is left out form one
  :class:`Row` (its label: the folder the seed runs share, e.g. ``clean/projective`` for
  ``clean/projective/seed42``, else the overrides).
- :func:`row_summaries`: mean ± sample std (``ddof=1``) across seeds of the LFW accuracy, AUC and
  TAR@FAR, beside the per-seed values (:func:`stn_face.evaluation.comparison.seed_summary`).
- :func:`paired_comparisons`: every row with a learned transform against the identity row of the same
  condition (the same overrides but ``transform``), on their common seeds and the same pairs, from
  the scored pairs stored in each run's ``roc_lfw.npz`` (:func:`.comparison.paired_difference`).
  Further pairs of rows on request (two conditions, e.g. landmark-aligned against plain crops).
- :func:`write_study`: ``seeds.md`` / ``seeds.csv``, ``paired.md`` / ``paired.csv`` and ``roc.png``
  with one curve per row, drawn from the row's median seed by accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stn_face.evaluation.comparison import holm, paired_difference, seed_summary
from stn_face.evaluation.report import Run, benchmark, percent
from stn_face.evaluation.tables import MISSING, mean_std, write_csv

__all__ = ["Row", "check_labels", "group_by_seed", "median_seed", "paired_comparisons", "row_summaries", "write_study"]



@dataclass
class Row:
    """One row of a study: its label, transform, the overrides it shares, and its runs by seed."""

    label: str
    transform: str | None
    condition: tuple[str, ...]
    runs: dict[int | None, Run] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int | None]:
        return sorted(self.runs, key=lambda s: (s is None, s or 0))


def _without(overrides: Sequence[str], *keys: str) -> tuple[str, ...]:
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys))


def _common_folder(runs: Sequence[Run], root: Path) -> str:
    parts = [PurePosixPath(run.directory.relative_to(root).as_posix()).parts for run in runs]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(runs) == 1 and common and runs[0].seed is not None and common[-1] == f"seed{runs[0].seed}":
        common.pop()
    return "/".join(common)


def group_by_seed(runs: Sequence[Run], root: str | Path) -> list[Row]:
    """Group runs that differ only in ``seed`` (two runs of one seed and condition stay separate rows)."""
    root = Path(root).resolve()
    groups: dict[tuple[str, ...], list[list[Run]]] = {}
    for run in runs:
        rows = groups.setdefault(_without(run.overrides, "seed"), [])
        row = next((r for r in rows if all(other.seed != run.seed for other in r)), None)
        if row is None:
            rows.append([run])
        else:
            row.append(run)
    result = []
    for key, rows in groups.items():
        for members in rows:
            label = _common_folder(members, root) or " ".join(key) or str(members[0].directory.relative_to(root))
            result.append(Row(label=label, transform=members[0].transform, condition=_without(key, "transform"),
                              runs={run.seed: run for run in members}))
    return sorted(result, key=lambda row: row.label)


def _values(row: Row, key: str, far: str) -> dict[int, float | None]:
    values = {}
    for seed, run in row.runs.items():
        lfw = benchmark(run, "lfw") or {}
        value = (lfw.get("tar_at_far") or {}).get(far) if key == "tar" else lfw.get(key)
        values[-1 if seed is None else seed] = percent(value) if key != "auc" else value
    return values


def row_summaries(rows: Sequence[Row], far: str = "1e-3") -> list[dict[str, Any]]:
    """One dict per row: ``row``, ``transform``, ``seeds`` and, for ``acc`` (LFW accuracy, %), ``auc``
    and ``tar`` (TAR@FAR=far, %), a :func:`seed_summary` each."""
    return [{"row": row.label, "transform": row.transform, "seeds": row.seeds,
             "acc": seed_summary(_values(row, "accuracy_mean", far)),
             "auc": seed_summary(_values(row, "auc", far)),
             "tar": seed_summary(_values(row, "tar", far))} for row in rows]


def median_seed(row: Row) -> int | None:
    """The seed whose LFW accuracy is the median of the row's (the lower middle for an even count)."""
    ranked = sorted(row.runs, key=lambda s: ((benchmark(row.runs[s], "lfw") or {}).get("accuracy_mean") or 0.0,
                                             s is None, s or 0))
    return ranked[(len(ranked) - 1) // 2]


def _outcomes(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(correct, labels, folds) of the run's LFW pairs, or None when its ROC file holds no pairs."""
    from stn_face.evaluation.artifacts import load_pair_scores
    from stn_face.evaluation.verification import kfold_correct

    path = run.roc_path("lfw")
    pairs = None if path is None else load_pair_scores(path)
    if pairs is None:
        return None
    correct, _, _ = kfold_correct(pairs.scores, pairs.labels, pairs.folds)
    return correct, pairs.labels, pairs.folds


def check_labels(rows: Sequence[Row], pairs: Sequence[tuple[str, str]]) -> None:
    """Raise ``KeyError`` ("names no row 'x'; the rows are: ...") for a label in ``pairs`` that names no row."""
    labels = sorted(row.label for row in rows)
    unknown = [name for pair in pairs for name in pair if name not in labels]
    if unknown:
        raise KeyError(f"names no row {', '.join(map(repr, unknown))}; the rows are: {', '.join(labels)}")


def _seed_free(row: Row) -> bool:
    """One run with no seed: a network scored without training (``train=false`` without a checkpoint,
    ``stn-face-eval backbone=`` or ``embeddings=``), whose result no seed changes."""
    return list(row.runs) == [None]


def _run_of(row: Row, seed: int | None) -> Run:
    return row.runs[None] if _seed_free(row) else row.runs[seed]


def paired_comparisons(rows: Sequence[Row], n_boot: int = 10_000, level: float = 0.95,
                       extra: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Each learned row against the identity row of its condition, on their common seeds; then each
    ``(row, reference)`` pair of labels in ``extra`` (e.g. ``("clean/landmarks", "clean/identity")``: two
    conditions, both without a transformer).

    The comparisons with two or more seeds are one family: each gets ``p_holm`` (its ``p_seeds_pairs``
    Holm-adjusted over the family, :func:`.comparison.holm`) and ``distinguishable_holm``
    (``p_holm < 1 - level``), the verdict that allows for the table testing many differences at once.

    A seed-free row (one run with no seed: an untrained network, :func:`_seed_free`) is compared with every
    seed of the other row, so its outcomes repeat across seeds and only the other row's seeds vary.

    Rows whose runs hold no scored pairs (older ROC files) are skipped with ``note`` saying so; pairs that
    differ between the two rows (another pair file or order) raise ``ValueError``; a label in ``extra``
    that names no row raises ``KeyError`` listing the rows.
    """
    check_labels(rows, extra)  # before any run is read and scored
    cache: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    def outcomes_of(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        # an identity row is the reference of every learned row of its condition: read and score it once
        if run.directory not in cache:
            cache[run.directory] = _outcomes(run)
        return cache[run.directory]

    def compare(row: Row, reference: Row) -> dict[str, Any]:
        seeds = [s for s in row.seeds if s in reference.runs]
        if not seeds and _seed_free(reference):  # an untrained network: the same reference for every seed
            seeds = row.seeds
        elif not seeds and _seed_free(row):
            seeds = reference.seeds
        entry: dict[str, Any] = {"row": row.label, "reference": reference.label, "seeds": seeds}
        if not seeds:
            return {**entry, "note": "no seed in common"}
        outcomes = [(outcomes_of(_run_of(row, s)), outcomes_of(_run_of(reference, s))) for s in seeds]
        if any(a is None or b is None for a, b in outcomes):
            return {**entry, "note": "no scored pairs stored (roc_lfw.npz written before they were kept)"}
        _, base_labels, base_folds = outcomes[0][1]
        for seed, pair in zip(seeds, outcomes, strict=True):
            if not all(np.array_equal(o[1], base_labels) and np.array_equal(o[2], base_folds) for o in pair):
                raise ValueError(f"{row.label} and {reference.label} (seed {seed}) were not scored on the same pairs: "
                                 "compare runs evaluated on the same pair file")
        result = paired_difference([a[0] for a, _ in outcomes], [b[0] for _, b in outcomes], n_boot=n_boot, level=level,
                                   untrained=_seed_free(row) and _seed_free(reference))
        return {**entry, **result}

    comparisons = []
    for row in rows:
        if (row.transform or "").lower() in ("", "identity"):
            continue
        reference = next((r for r in rows if r.condition == row.condition and (r.transform or "").lower() == "identity"),
                         None)
        if reference is not None:
            comparisons.append(compare(row, reference))
    by_label = {row.label: row for row in rows}
    comparisons.extend(compare(by_label[label], by_label[reference]) for label, reference in extra)
    adjusted = holm([c.get("p_seeds_pairs") for c in comparisons])
    for c, p_holm in zip(comparisons, adjusted, strict=True):
        if "difference" in c:
            c["p_holm"] = p_holm
            c["distinguishable_holm"] = None if p_holm is None else bool(p_holm < 1 - level)
    return comparisons


# --------------------------------------------------------------------------------------------------
# Files


def _mean_std(summary: Mapping[str, Any], digits: int) -> str:
    return mean_std(summary["mean"], summary["std"], digits)


def _per_seed(summary: Mapping[str, Any], digits: int) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in summary["values"].values()) or MISSING


def _seeds_text(seeds: Sequence[int | None]) -> str:
    return ", ".join("-" if s is None else str(s) for s in seeds)


def _protocol_counts(rows: Sequence[Row]) -> tuple[str, str, str]:
    """The folds, the folds a threshold is chosen on and the pairs of the rows' LFW sets, as words (one
    value when every run agrees, else a general word), so the notes state what was scored."""
    sets = [benchmark(run, "lfw") or {} for row in rows for run in row.runs.values()]
    folds = {s.get("n_folds") for s in sets}
    pairs = {s.get("n_pairs") for s in sets}
    k = next(iter(folds)) if len(folds) == 1 and None not in folds else None
    n = next(iter(pairs)) if len(pairs) == 1 and None not in pairs else None
    return (f"{k}-fold" if k else "k-fold", f"other {k - 1}" if k else "other", f"all {n:,}" if n else "all")


def _seeds_markdown(summaries: Sequence[Mapping[str, Any]], far: str,
                    counts: tuple[str, str, str] = ("k-fold", "other", "all")) -> str:
    header = ["Row", "Transform", "Seeds", "LFW acc (%)", "per seed", "LFW AUC", "per seed",
              f"TAR@FAR={far} (%)", "per seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        lines.append("| " + " | ".join([
            f"`{s['row']}`", s["transform"] or MISSING, _seeds_text(s["seeds"]),
            _mean_std(s["acc"], 2), _per_seed(s["acc"], 2), _mean_std(s["auc"], 4), _per_seed(s["auc"], 4),
            _mean_std(s["tar"], 2), _per_seed(s["tar"], 2)]) + " |")
    kfold, others, pooled = counts
    note = ("\nMean ± sample standard deviation (ddof=1) across seeds; per-seed values in seed order; seed \"-\": "
            "no seed (a network scored without training, or a run that did not record its seed). Each run's "
            f"accuracy is the {kfold} LFW View 2 accuracy (threshold chosen on the {others} folds); AUC and "
            f"TAR@FAR={far} on {pooled} pairs pooled.\n")
    return "\n".join(lines) + "\n" + note


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _p(value: float | None) -> str:
    # the bootstrap resolves p only down to 2 / (n_boot + 1): below 0.001 more digits would say little
    return "-" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _paired_markdown(comparisons: Sequence[Mapping[str, Any]]) -> str:
    header = ["Row", "vs", "Seeds", "Δ acc (points)", "per seed", "95 % CI, pairs", "95 % CI, seeds+pairs",
              "distinguishable from 0", "p", "Holm p", "after Holm"]
    verdict = {True: "yes", False: "no", None: "- (1 seed)"}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in comparisons:
        if "difference" not in c:
            lines.append(f"| `{c['row']}` | `{c['reference']}` | {_seeds_text(c['seeds'])} | {c['note']} ||||||||")
            continue
        lines.append("| " + " | ".join([
            f"`{c['row']}`", f"`{c['reference']}`", _seeds_text(c["seeds"]), _points(c["difference"]),
            " / ".join(_points(d) for d in c["per_seed"]),
            f"[{_points(c['ci_pairs'][0])}, {_points(c['ci_pairs'][1])}]",
            f"[{_points(c['ci_seeds_pairs'][0])}, {_points(c['ci_seeds_pairs'][1])}]",
            verdict[c["distinguishable"]], _p(c["p_seeds_pairs"]), _p(c["p_holm"]),
            verdict[c["distinguishable_holm"]]]) + " |")
    n_boot = next((c["n_boot"] for c in comparisons if "n_boot" in c), 0)
    family = sum(c.get("p_holm") is not None for c in comparisons)
    note = (f"\nPaired accuracy difference (the row minus the row in \"vs\": its identity row unless the pair was "
            "named with --compare) on the same seeds and the same pairs, each "
            "pair's outcome under the 10-fold protocol; the mean over seeds. Intervals: percentile bootstrap "
            f"({n_boot:,} resamples) over pairs with the trained models fixed (\"pairs\"), and over seeds and pairs "
            "(\"seeds+pairs\", which adds training noise). Distinguishable: the seeds+pairs interval excludes 0; "
            "a row with one seed gets no verdict, its interval holding no training noise, except between two "
            "networks scored without training (seeds \"-\"), which have none. A seed-free row compared with a "
            "trained one is the reference of each of its seeds. p: the two-sided "
            "bootstrap p-value of the seeds+pairs resamples at 0; Holm p: adjusted by Holm's step-down method "
            f"over the {family} comparisons of this table, so that \"after Holm\" (Holm p < 0.05) keeps the "
            "chance of any false \"yes\" in the whole table below 5 % (stn_face/evaluation/comparison.py).\n")
    return "\n".join(lines) + "\n" + note


def _flat_summary(s: Mapping[str, Any]) -> dict[str, Any]:
    flat = {"row": s["row"], "transform": s["transform"], "seeds": " ".join(map(str, s["seeds"]))}
    for key in ("acc", "auc", "tar"):
        flat.update({f"{key}_mean": s[key]["mean"], f"{key}_std": s[key]["std"],
                     f"{key}_per_seed": " ".join(f"{v:.6g}" for v in s[key]["values"].values())})
    return flat


def _flat_comparison(c: Mapping[str, Any]) -> dict[str, Any]:
    flat = {"row": c["row"], "reference": c["reference"], "seeds": " ".join(map(str, c["seeds"]))}
    if "difference" in c:
        flat.update(difference=c["difference"], per_seed=" ".join(f"{d:.6g}" for d in c["per_seed"]),
                    ci_pairs_low=c["ci_pairs"][0], ci_pairs_high=c["ci_pairs"][1],
                    ci_seeds_pairs_low=c["ci_seeds_pairs"][0], ci_seeds_pairs_high=c["ci_seeds_pairs"][1],
                    distinguishable=c["distinguishable"], p_seeds_pairs=c["p_seeds_pairs"], p_holm=c["p_holm"],
                    distinguishable_holm=c["distinguishable_holm"], n_pairs=c["n_pairs"], n_boot=c["n_boot"])
    else:
        flat["note"] = c["note"]
    return flat


def write_study(rows: Sequence[Row], out_dir: str | Path, far: str = "1e-3",
                published: Mapping[str, Any] | None = None, n_boot: int = 10_000,
                compare: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """``seeds.md``/``.csv``, ``paired.md``/``.csv`` (learned rows against their identity rows, then the
    ``compare`` pairs) and ``roc.png`` (one curve per row: its median seed)."""
    from stn_face.evaluation.artifacts import load_roc_npz
    from stn_face.evaluation.plots import plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = row_summaries(rows, far)
    comparisons = paired_comparisons(rows, n_boot=n_boot, extra=compare)
    (out / "seeds.md").write_text(_seeds_markdown(summaries, far, _protocol_counts(rows)))
    (out / "paired.md").write_text(_paired_markdown(comparisons))
    written = [out / "seeds.md", write_csv(out / "seeds.csv", [_flat_summary(s) for s in summaries]),
               out / "paired.md", write_csv(out / "paired.csv", [_flat_comparison(c) for c in comparisons])]
    curves = {}
    for row in rows:
        seed = median_seed(row)
        path = row.runs[seed].roc_path("lfw")
        if path is not None:
            which = "no seed" if _seed_free(row) else f"seed {seed}, median of {len(row.runs)}"
            curves[f"{row.label} ({which})"] = load_roc_npz(path)
    if curves:
        written.append(plot_roc(curves, out / "roc.png", published=published,
                                title="LFW View 2 ROC, one curve per row (its median seed by accuracy)"))
    return written
