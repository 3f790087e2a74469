"""The cells and CSV files the report tables share."""

from __future__ import annotations

import csv
from pathlib import Path

from stn_face.evaluation.tables import MISSING, mean_std, write_csv


def test_mean_std_cells() -> None:
    assert mean_std(98.123, 0.456) == "98.12 ± 0.46"
    assert mean_std(0.98765, None, digits=4) == "0.9877"
    assert mean_std(None, 1.0) == MISSING == "-"


def test_csv_columns_in_first_seen_order_and_empty_for_none(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": None}, {"a": 2, "c": "x"}])
    with path.open() as handle:
        assert list(csv.reader(handle)) == [["a", "b", "c"], ["1", "", ""], ["2", "", "x"]]
    assert (write_csv(tmp_path / "e.csv", [], empty_header=["transform"])).read_text().strip() == "transform"
