"""The preparation run: plan, lock the output folder, resume from its manifest, run the workers, count.

:func:`prepare_collection` is the entry point; the package docstring (:mod:`stn_face.data.prepare`)
describes the output layout, the statuses and the decisions behind them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stn_face.data.detect import FaceDetector
from stn_face.data.prepare.manifest import (
    DETECTED,
    FALLBACK,
    MANIFEST_NAME,
    USABLE_STATUSES,
    ManifestAppender,
    manifest_row,
    read_manifest,
    read_settings,
    remove_outputs,
    write_manifest,
    write_settings,
    write_summary,
)
from stn_face.data.prepare.plan import (
    DEFAULT_EXTENSIONS,
    Plan,
    Task,
    check_paths,
    make_plan,
    output_name,
    read_identity_list,
)
from stn_face.data.prepare.settings import CropSettings, PrepareError, detector_record
from stn_face.data.prepare.workers import (
    build_detector,
    detector_device,
    is_cpu,
    run_in_process,
    run_in_processes,
)

log = logging.getLogger("stn_face.data.prepare")

LOCK_NAME = ".prepare.lock"
LOCK_TIMEOUT_S = 6 * 3600


@dataclass
class PrepareSummary:
    """Counts over the selected input files after a run (every one has exactly one manifest row)."""

    input_dir: str
    output_dir: str
    mode: str
    size: int
    total: int = 0
    processed: int = 0  # decoded and detected in this run
    resumed: int = 0  # already in the manifest from an earlier run, not redone
    detected: int = 0
    fallback_center: int = 0
    failed: int = 0
    skipped: int = 0
    ignored_root_files: int = 0
    manifest_rows: int = 0
    workers: int = 0  # worker processes on the CPU; reading threads beside an accelerator
    device: str = "cpu"
    wall_seconds: float = 0.0
    images_per_second: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        where = (f"{self.workers} worker(s)" if is_cpu(self.device)
                 else f"{self.device} with {self.workers} reading thread(s)")
        lines = [
            (f"prepared {self.total} files of {self.input_dir} into {self.output_dir} "
             f"(mode={self.mode}, size={self.size})"),
            (f"  detected {self.detected}, fallback_center {self.fallback_center}, failed {self.failed}, "
             f"skipped {self.skipped}"),
            (f"  this run: {self.processed} processed, {self.resumed} already done; "
             f"{self.wall_seconds:.1f} s, {self.images_per_second:.1f} images/s on {where}"),
        ]
        for reason, count in sorted(self.failure_reasons.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {count} x {reason}")
        for reason, count in sorted(self.skip_reasons.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {count} x {reason}")
        lines.append(f"  manifest: {Path(self.output_dir) / MANIFEST_NAME}")
        return "\n".join(lines)


def prepare_collection(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: CropSettings | None = None,
    *,
    workers: int = 2,
    device: str = "cpu",
    photos_per_batch: int = 8,
    min_images_per_identity: int = 1,
    max_images_per_identity: int | None = None,
    exclude_identities: str | os.PathLike | Sequence[str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    retry_failed: bool = False,
    replace_stale: bool = False,
    detector: Mapping[str, Any] | Callable[..., FaceDetector] | None = None,
    files: Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Detect and crop every photo of ``input_dir`` (or only ``files``, paths relative to it) into
    ``output_dir`` with ``settings`` (default ``CropSettings()``); resumable and idempotent.

    ``detector``: keyword arguments of :class:`MTCNNDetector`, a mapping with a Hydra ``_target_``,
    or a picklable factory returning any :class:`FaceDetector`; it is built on ``device`` (for
    detectors with a ``device`` argument) once here and once in each worker process. On the CPU,
    ``workers`` processes take chunks of up to ``photos_per_batch`` photos; on another device this process
    feeds the detector batches of ``photos_per_batch`` and ``workers`` threads read and write the files.
    A folder prepared with other settings or another detector is an error, or with ``replace_stale``
    (for caches) emptied and prepared again. Raises :class:`PrepareError` for bad paths or settings.
    """
    started = time.perf_counter()
    input_dir = Path(input_dir).expanduser().resolve()
    output_dir = Path(output_dir).expanduser().resolve()
    settings = CropSettings() if settings is None else settings
    if not isinstance(settings, CropSettings):
        raise PrepareError(f"settings must be a CropSettings, got {type(settings).__name__}; build it with "
                           "CropSettings(mode=..., size=...) or CropSettings.split(options)")
    if min_images_per_identity < 0 or (max_images_per_identity is not None and max_images_per_identity < 1):
        raise PrepareError("min_images_per_identity must be >= 0 and max_images_per_identity >= 1 or null")
    if int(photos_per_batch) < 1:
        raise PrepareError(f"photos_per_batch={photos_per_batch} must be at least 1 (photos per detector call)")
    check_paths(input_dir, output_dir, files)
    excluded = read_identity_list(exclude_identities)
    plan = make_plan(input_dir, files, extensions, int(min_images_per_identity),
                     None if max_images_per_identity is None else int(max_images_per_identity), excluded)

    output_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(output_dir):
        face_detector = build_detector(detector, str(device))
        recorded = {**settings.recorded(), "detector": detector_record(detector, face_detector)}
        rows = _check_settings(output_dir, recorded, replace_stale)
        tasks, resumed, selection = _pending(input_dir, output_dir, plan, rows, retry_failed)
        summary = PrepareSummary(input_dir=str(input_dir), output_dir=str(output_dir), mode=settings.mode,
                                 size=settings.size, resumed=resumed,
                                 workers=min(max(1, int(workers)), max(1, len(tasks))),
                                 device=detector_device(face_detector, str(device)),
                                 ignored_root_files=plan.ignored_root_files)
        if tasks:
            _run(tasks, rows, settings, detector, face_detector, summary, int(photos_per_batch), progress)
        write_manifest(output_dir, rows.values())
        _count(summary, selection, rows, started)
        write_summary(output_dir, summary.to_dict())
    if progress:
        print(summary.format(), flush=True)
    return summary


@contextlib.contextmanager
def _exclusive(output_dir: Path):
    """One preparation at a time per output folder (an advisory lock; a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(output_dir / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # Another run (a second job of a sweep, a test) prepares the same folder: wait for it,
            # then this run resumes from its manifest and finds the work done.
            print(f"waiting for another preparation writing to {output_dir} ...", file=sys.stderr, flush=True)
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise PrepareError(
                            f"another preparation has been writing to {output_dir} for over {LOCK_TIMEOUT_S} s; "
                            "wait for it to finish or choose another output folder") from None
                    time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_settings(output_dir: Path, recorded: dict[str, Any], replace_stale: bool) -> dict[str, dict[str, str]]:
    """The manifest rows of the folder, after making sure its crops were made with ``recorded``.

    A folder that holds crops made with other settings is refused, or, with ``replace_stale``,
    emptied of them (its rows dropped) so it is prepared again; either way it never mixes two kinds.
    """
    rows = {row["source"]: row for row in read_manifest(output_dir)}
    previous = read_settings(output_dir)
    if previous is not None and any(r["status"] in USABLE_STATUSES for r in rows.values()):
        if isinstance(previous.get("detector"), dict) and "factory" not in previous["detector"]:
            previous["detector"] = detector_record(previous["detector"])  # complete older records
        diff = {k: (previous.get(k), v) for k, v in recorded.items() if previous.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in diff.items())
            if not replace_stale:
                raise PrepareError(f"output folder {output_dir} was prepared with other settings: {changes}; "
                                   "choose a new output folder, or delete this one to prepare it again")
            removed = remove_outputs(output_dir, rows.values())
            log.warning("%s was prepared with other settings (%s): its %d crops are deleted and made again",
                        output_dir, changes, removed)
            rows = {}
    write_settings(output_dir, recorded)
    return rows


def _pending(input_dir: Path, output_dir: Path, plan: Plan, rows: dict[str, dict[str, str]],
             retry_failed: bool) -> tuple[list[Task], int, list[str]]:
    """The tasks still to do, how many candidates are done already, and every selected source; records
    the skipped files (deleting crops the filters now leave out) and output name clashes in ``rows``."""
    selection: list[str] = []
    for source, (identity, reason) in plan.skipped.items():
        old = rows.get(source)
        if old and old["output"]:
            (output_dir / old["output"]).unlink(missing_ok=True)  # filters win over earlier crops
        rows[source] = manifest_row(source, identity, reason)
        selection.append(source)

    taken = {row["output"]: s for s, row in rows.items() if row["output"]}
    tasks: list[Task] = []
    resumed = 0
    for source, identity in plan.candidates:
        selection.append(source)
        old = rows.get(source)
        if old is not None and not old["status"].startswith("skipped:"):
            usable = old["status"] in USABLE_STATUSES
            if (usable and old["output"] and (output_dir / old["output"]).is_file()) or \
                    (old["status"].startswith("failed:") and not retry_failed):
                resumed += 1
                continue
        out = output_name(source)
        if taken.get(out, source) != source:
            rows[source] = manifest_row(source, identity, f"failed: output name {out} already used by {taken[out]}")
            continue
        taken[out] = source
        rows.pop(source, None)
        tasks.append(Task(source, identity, str(input_dir / source), out, str(output_dir)))
    write_manifest(output_dir, rows.values())
    return tasks, resumed, selection


def _run(tasks: list[Task], rows: dict[str, dict[str, str]], settings: CropSettings, detector_spec: Any,
         detector: FaceDetector, summary: PrepareSummary, photos_per_batch: int, progress: bool) -> None:
    """Process the tasks, appending each row to the manifest (and ``rows``) as it completes."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=f"prepare {Path(summary.input_dir).name}", unit="img",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    counts: Counter[str] = Counter()
    with ManifestAppender(Path(summary.output_dir)) as manifest:

        def on_row(row: dict[str, str]) -> None:
            manifest.append(row)
            rows[row["source"]] = row
            counts[row["status"].split(":")[0]] += 1
            bar.update(1)
            if bar.n % 50 == 0 or bar.n == bar.total:
                bar.set_postfix(counts, refresh=False)

        try:
            if is_cpu(summary.device) and summary.workers > 1:
                run_in_processes(tasks, settings, detector_spec, summary.device, summary.workers, photos_per_batch,
                                 on_row)
            else:
                run_in_process(tasks, settings, detector, photos_per_batch, summary.workers, on_row)
        finally:
            bar.close()
    summary.processed = len(tasks)


def _count(summary: PrepareSummary, selection: list[str], rows: dict[str, dict[str, str]], started: float) -> None:
    summary.wall_seconds = round(time.perf_counter() - started, 3)
    if summary.processed:
        summary.images_per_second = round(summary.processed / summary.wall_seconds, 2)
    failures: Counter[str] = Counter()
    skips: Counter[str] = Counter()
    for source in selection:
        status = rows[source]["status"]
        summary.total += 1
        if status == DETECTED:
            summary.detected += 1
        elif status == FALLBACK:
            summary.fallback_center += 1
        elif status.startswith("failed:"):
            summary.failed += 1
            failures[_reason_kind(status)] += 1
        else:
            summary.skipped += 1
            skips[_reason_kind(status)] += 1
    summary.failure_reasons, summary.skip_reasons = dict(failures), dict(skips)
    summary.manifest_rows = len(rows)


def _reason_kind(status: str) -> str:
    """Group statuses for the summary: the reason without its variable detail in parentheses."""
    return status.split(" (", 1)[0]
