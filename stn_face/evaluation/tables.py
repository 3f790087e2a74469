"""What the result tables of ``stn-face-report`` share: the mark of a missing value, ``mean ± std`` cells
and the CSV writer."""

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
