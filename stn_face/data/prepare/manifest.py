"""The records of an output folder: ``manifest.csv`` (one row per input file), ``summary.json`` and
``prepare_settings.json``. This module is the one reader and writer of these files.

Writes that replace a file go through a temporary file and ``os.replace``; rows of a running
preparation are appended and flushed one by one, so a killed run loses at most the row it was writing
(:func:`read_manifest` drops a cut-off line).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stn_face.data.detect import Detection
from stn_face.files import atomic_write

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
SETTINGS_NAME = "prepare_settings.json"
MANIFEST_COLUMNS = ("source", "identity", "output", "box", "landmarks", "score", "status")
DETECTED, FALLBACK = "detected", "fallback_center"
USABLE_STATUSES = (DETECTED, FALLBACK)


def _fmt(values: Iterable[float], digits: int = 2) -> str:
    return " ".join(f"{float(v):.{digits}f}" for v in values)


def parse_numbers(text: str) -> list[float]:
    """``"1.0 2.5 3"`` -> ``[1.0, 2.5, 3.0]`` (box and landmarks columns); empty text -> ``[]``."""
    return [float(v) for v in text.split()] if text else []


def manifest_row(source: str, identity: str, status: str, output: str = "", face: Detection | None = None
                 ) -> dict[str, str]:
    """One manifest row; ``face`` (box, landmarks, score) in the source file's pixels."""
    return {
        "source": source, "identity": identity, "output": output,
        "box": _fmt(face.box) if face else "",
        "landmarks": _fmt(np.asarray(face.landmarks).reshape(-1)) if face else "",
        "score": f"{face.score:.4f}" if face else "",
        "status": status,
    }


def _valid_row(row: Mapping[str, Any]) -> bool:
    if any(row.get(c) is None for c in MANIFEST_COLUMNS) or None in row:
        return False
    status = row["status"]
    return bool(row["source"]) and (status in USABLE_STATUSES or status.startswith(("failed:", "skipped:")))


def read_manifest(output_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``<output_dir>/manifest.csv`` (all values strings), sorted by source.

    Tolerates what a killed run can leave: a cut-off last line is dropped, and when a source appears
    twice the later row wins. A missing manifest gives an empty list.
    """
    path = Path(output_dir) / MANIFEST_NAME
    if not path.is_file():
        return []
    rows: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        try:
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise _not_a_manifest(path, f"its first line is {','.join(reader.fieldnames or [])[:80]!r}, not "
                                            f"the header {','.join(MANIFEST_COLUMNS)}")
            for row in reader:
                if _valid_row(row):
                    _check_row_paths(path, reader.line_num, row)
                    rows[row["source"]] = {c: row[c] for c in MANIFEST_COLUMNS}
        except csv.Error as error:  # a line cut in the middle of a quoted field: only the last one may be
            if handle.read().strip():
                raise _not_a_manifest(path, f"line {reader.line_num} cannot be read ({error}) and more follows") from None
    return [rows[s] for s in sorted(rows)]


def _not_a_manifest(path: Path, problem: str) -> Exception:
    from stn_face.errors import HostileInputError

    return HostileInputError(f"{path} is not a manifest stn-face-prepare can use: {problem}; it is left as it is: "
                             "move it away (or delete it) to prepare this folder afresh")


def _check_row_paths(path: Path, line: int, row: Mapping[str, str]) -> None:
    """The ``source`` and ``output`` of a row become paths below the input and output folders (crops are
    written, replaced and deleted there): a name that would leave them stops the run before any write."""
    from stn_face.errors import InputError
    from stn_face.files import check_relative_path

    for column in ("source", "output"):
        if row[column]:
            try:
                check_relative_path(row[column], f"{column}")
            except InputError as error:
                raise _not_a_manifest(path, f"line {line}: {error}") from None


def crop_path_map(output_dir: str | os.PathLike) -> dict[str, Path]:
    """Source path relative to the input root -> absolute crop path, for rows with a usable crop
    (``detected`` or ``fallback_center``) whose file exists."""
    root = Path(output_dir).resolve()
    result = {}
    for row in read_manifest(root):
        if row["status"] in USABLE_STATUSES and row["output"]:
            path = root / row["output"]
            if path.is_file():
                result[row["source"]] = path
    return result


def write_manifest(output_dir: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """Replace the manifest with ``rows``, sorted by source."""
    path = output_dir / MANIFEST_NAME
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["source"]):
            writer.writerow({c: row[c] for c in MANIFEST_COLUMNS})


class ManifestAppender:
    """Appends rows to the manifest as they complete, each flushed at once (a context manager)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / MANIFEST_NAME

    def __enter__(self) -> ManifestAppender:
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=MANIFEST_COLUMNS)
        return self

    def append(self, row: Mapping[str, str]) -> None:
        self._writer.writerow({c: row[c] for c in MANIFEST_COLUMNS})
        self._handle.flush()

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_write(path) as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_summary(output_dir: Path, summary: Mapping[str, Any]) -> None:
    write_json_atomic(output_dir / SUMMARY_NAME, dict(summary))


def read_settings(output_dir: Path) -> dict[str, Any] | None:
    """The recorded ``prepare_settings.json``, or None when there is none (or it cannot be read)."""
    try:
        previous = json.loads((output_dir / SETTINGS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def write_settings(output_dir: Path, recorded: Mapping[str, Any]) -> None:
    write_json_atomic(output_dir / SETTINGS_NAME, dict(recorded))


def remove_outputs(output_dir: Path, rows: Iterable[Mapping[str, str]]) -> int:
    """Delete the crops that ``rows`` name and the manifest (a folder to be prepared again); returns
    how many crop files were deleted. Files the manifest does not name are left alone."""
    removed = 0
    for row in rows:
        if row["output"] and (output_dir / row["output"]).is_file():
            (output_dir / row["output"]).unlink()
            removed += 1
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    return removed
