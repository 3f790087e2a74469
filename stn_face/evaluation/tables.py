"""What the result tables of ``stn-face-report`` and the studies share: the mark of a missing value,
``mean ± std`` cells, the CSV writer, the wall-time table of a study's ``times.tsv`` and the filling of a
study page's ``{{SLOT}}`` template."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: the cell of a value a run did not record
MISSING = "-"


def mean_std(mean: Any, std: Any, digits: int = 2) -> str:
    """``"mean ± std"`` with ``digits`` decimals; the mean alone without a std; :data:`MISSING` without a mean."""
    if mean is None:
        return MISSING
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], empty_header: Sequence[str] = ("row",)) -> Path:
    """``rows`` as CSV, columns in first-seen order (``empty_header`` when there is no row); None is empty."""
    path = Path(path)
    fieldnames = list(dict.fromkeys(key for row in rows for key in row)) or list(empty_header)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def _minutes(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def timing_table(times_tsv: str | Path) -> str:
    """One markdown line per row of a study: its seeds, each run's wall time and the 1-minute load average
    as it ended, from the ``times.tsv`` a study's ``run.sh`` appends to.

    ``times.tsv`` columns: row, seed (``-`` for a seed-free run), seconds, finished at, machine, load
    averages, command."""
    runs: dict[str, list[list[str]]] = {}
    for line in Path(times_tsv).read_text().splitlines():
        fields = line.split("\t")
        runs.setdefault(fields[0], []).append(fields)
    lines = ["| row | seeds run | wall time per run (min:s), in seed order | load average at the end (1 min) |",
             "|---|---|---|---|"]
    for row, done in runs.items():
        seeds = ", ".join(f[1] for f in done)
        walls = " / ".join(_minutes(int(f[2])) for f in done)
        loads = " / ".join(f[5].split()[0] for f in done)
        lines.append(f"| `{row}` | {seeds} | {walls} | {loads} |")
    return "\n".join(lines)


def fill_slots(template: str, slots: Mapping[str, str], source: str = "the template") -> str:
    """``template`` with every ``{{NAME}}`` replaced by ``slots[NAME]`` (stripped); ``ValueError`` naming
    ``source`` and the slot when one is left unfilled."""
    text = template
    for name, value in slots.items():
        text = text.replace("{{" + name + "}}", value.strip())
    if "{{" in text:
        raise ValueError(f"{source} has a slot with no value: {text[text.index('{{'):][:40]!r}")
    return text
