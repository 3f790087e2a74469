"""Face preparation: detect, crop and record every photo of an identity-folder collection.

Input: ``<input>/<identity>/<image>`` (deeper folders inside an identity folder are walked too, e.g.
YTF's ``<person>/<video>/<frame>.jpg``). Output: the same relative layout of JPEG face crops, plus in
the output root

- ``manifest.csv``: one row per input file: ``source`` (path relative to the input root, ``/``
  separated), ``identity``, ``output`` (crop path relative to the output root, empty when there is no
  crop), ``box`` (``x1 y1 x2 y2`` of the chosen detection in the source file's pixels, also for photos
  downscaled for being larger than ``max_pixels``), ``landmarks`` (10 numbers:
  x y of left eye, right eye, nose, left and right mouth corner), ``score`` and ``status``:
  ``detected``, ``fallback_center`` (no face found: centre crop), ``failed: <reason>`` (unreadable
  file) or ``skipped: <reason>`` (left out by the identity filters or the extension list);
- ``summary.json``: the counts of the last run; ``prepare_settings.json``: the settings that shape
  the crops, checked on every later run so one folder never mixes two kinds of crops.

Decisions:
- Root-level files (e.g. ``identity_subset.txt``) are not identities: ignored, counted in the
  summary as ``ignored_root_files``. Hidden files and folders (``.name``) are ignored everywhere.
- Files in identity folders whose extension is not in ``extensions`` get a ``skipped`` row, so the
  manifest accounts for every visible file. Explicitly listed ``files=`` are processed whatever
  their extension.
- Identity filters count the candidate files (before detection): an identity with fewer than
  ``min_images_per_identity`` files, or named in ``exclude_identities``, is skipped; beyond
  ``max_images_per_identity`` the files after the first ones in sorted name order are skipped. The
  filters are re-applied on every run and win over earlier results (a crop of a now-excluded identity
  is deleted), so the output folder never holds identities the filters leave out.
- Crops are JPEG; a source ``a.jpg``/``a.jpeg`` keeps its name, any other ``a.png`` becomes
  ``a.png.jpg`` (so ``a.png`` and ``a.jpg`` never collide).
- ``crop`` mode: the square of side ``margin`` x the longer box side, centred on the box, resized to
  ``size``; where the square leaves the photo it is padded with black (``border: constant``,
  like the zeros the spatial transformer samples outside its input) or with the edge pixels
  (``border: replicate``).
- ``landmarks`` mode: 5-point similarity alignment onto the ArcFace template
  (``insightface.utils.face_align.norm_crop``); ``size`` must be a multiple of 112 or 128.
- No face (either mode): the centre square of side ``fallback_size`` pixels, or
  ``fallback_fraction`` x the shorter image side, resized to ``size`` (status ``fallback_center``),
  so every identity keeps its photos; which ones is recorded.
- Resuming: rows already in the manifest are not redone (``failed`` ones neither, unless
  ``retry_failed``); a usable row whose crop file vanished is redone. Rows are appended and flushed
  as they complete; the final manifest is rewritten sorted and de-duplicated through a temporary
  file and ``os.replace``. An advisory lock (``.prepare.lock``) keeps two runs out of one folder.
- Workers are spawned processes (``workers``; 1 = in this process), each building its detector once;
  a worker that dies (a crashing decoder) costs only its file, which is recorded as ``failed``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import inspect
import json
import logging
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from stn_face.data.detect import SELECTION_POLICIES, Detection, FaceDetector, MTCNNDetector, select_face
from stn_face.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_rgb

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
SETTINGS_NAME = "prepare_settings.json"
MANIFEST_COLUMNS = ("source", "identity", "output", "box", "landmarks", "score", "status")
DETECTED, FALLBACK = "detected", "fallback_center"
USABLE_STATUSES = (DETECTED, FALLBACK)
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
MODES = ("crop", "landmarks")
BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


class PrepareError(Exception):
    """Bad input for the preparation (paths, settings): the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------------
# Settings and geometry


@dataclass(frozen=True)
class CropSettings:
    """Everything that decides what a crop looks like (saved in ``prepare_settings.json``)."""

    mode: str = "crop"
    size: int = 128
    margin: float = 1.3
    border: str = "constant"
    fallback_fraction: float = 0.6
    fallback_size: int | None = None
    face_selection: str = "largest"
    jpeg_quality: int = 95
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    downscale_large: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise PrepareError(f"mode={self.mode!r} is unknown; use mode=crop or mode=landmarks")
        if int(self.size) <= 0:
            raise PrepareError(f"size={self.size} must be a positive number of pixels")
        if self.mode == "landmarks" and self.size % 112 and self.size % 128:
            raise PrepareError(f"mode=landmarks needs size to be a multiple of 112 or 128 (ArcFace template), "
                               f"got size={self.size}; e.g. size=112")
        if self.margin <= 0:
            raise PrepareError(f"margin={self.margin} must be positive (1.3 = 30% larger than the face box)")
        if self.border not in BORDERS:
            raise PrepareError(f"border={self.border!r} is unknown; use border=constant or border=replicate")
        if not 0 < self.fallback_fraction <= 1:
            raise PrepareError(f"fallback_fraction={self.fallback_fraction} must lie in (0, 1]")
        if self.fallback_size is not None and self.fallback_size <= 0:
            raise PrepareError(f"fallback_size={self.fallback_size} must be a positive number of pixels or null")
        if self.face_selection not in SELECTION_POLICIES:
            raise PrepareError(f"face_selection={self.face_selection!r} is unknown; use one of "
                               f"{', '.join(SELECTION_POLICIES)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise PrepareError(f"jpeg_quality={self.jpeg_quality} must lie in 1..100")


def square_crop(image: np.ndarray, center: tuple[float, float], side: float, size: int,
                border: str = "constant") -> np.ndarray:
    """The square of ``side`` pixels centred on ``center`` (x, y), padded where it leaves the image,
    resized to ``size`` x ``size`` (area averaging when shrinking)."""
    height, width = image.shape[:2]
    s = max(1, round(side))
    x0 = round(center[0] - s / 2.0)
    y0 = round(center[1] - s / 2.0)
    x1, y1 = x0 + s, y0 + s
    inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    if inner.size == 0:
        raise ValueError(f"crop square {(x0, y0, x1, y1)} lies outside the {width}x{height} image")
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if any(pads):
        inner = cv2.copyMakeBorder(inner, *pads, BORDERS[border], value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(inner, (size, size), interpolation=interpolation)


@functools.lru_cache(maxsize=1)
def insightface_norm_crop() -> Callable[..., np.ndarray]:
    """``insightface.utils.face_align.norm_crop``, loaded without running ``insightface/__init__``.

    That package initialiser imports its model zoo and, through albumentations, torch: over ten
    seconds and hundreds of MB in every worker process, for a module that only needs cv2, numpy and
    scikit-image. Loaded from its file instead (or taken from ``sys.modules`` if already imported).
    """
    module = sys.modules.get("insightface.utils.face_align")
    if module is None:
        spec = importlib.util.find_spec("insightface")
        if spec is None or not spec.submodule_search_locations:
            raise PrepareError("mode=landmarks needs insightface: pip install insightface")
        path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "face_align.py"
        file_spec = importlib.util.spec_from_file_location("_stn_face_insightface_face_align", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    return module.norm_crop


def face_crop(image: np.ndarray, face: Detection, settings: CropSettings) -> np.ndarray:
    """The crop of one detected face according to ``settings.mode``."""
    if settings.mode == "landmarks":
        norm_crop = insightface_norm_crop()
        with warnings.catch_warnings():  # scikit-image >= 0.26 deprecates the estimate() insightface calls
            warnings.simplefilter("ignore", FutureWarning)
            return norm_crop(image, np.asarray(face.landmarks, dtype=np.float32), image_size=settings.size)
    side = settings.margin * max(face.width, face.height)
    return square_crop(image, face.center, side, settings.size, settings.border)


def center_crop(image: np.ndarray, settings: CropSettings) -> np.ndarray:
    """The fallback when no face is found: the centre square, resized to ``settings.size``."""
    height, width = image.shape[:2]
    side = settings.fallback_size or settings.fallback_fraction * min(height, width)
    return square_crop(image, (width / 2.0, height / 2.0), side, settings.size, settings.border)


# --------------------------------------------------------------------------------------------------
# Manifest


def _fmt(values: Iterable[float], digits: int = 2) -> str:
    return " ".join(f"{float(v):.{digits}f}" for v in values)


def parse_numbers(text: str) -> list[float]:
    """``"1.0 2.5 3"`` -> ``[1.0, 2.5, 3.0]`` (box and landmarks columns); empty text -> ``[]``."""
    return [float(v) for v in text.split()] if text else []


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
            for row in reader:
                if _valid_row(row):
                    rows[row["source"]] = {c: row[c] for c in MANIFEST_COLUMNS}
        except csv.Error:  # a line cut in the middle of a quoted field
            pass
    return [rows[s] for s in sorted(rows)]


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


def _write_manifest_atomic(output_dir: Path, rows: Iterable[Mapping[str, str]]) -> None:
    path = output_dir / MANIFEST_NAME
    tmp = output_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["source"]):
            writer.writerow({c: row[c] for c in MANIFEST_COLUMNS})
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Planning: which files, which identities, which output names


@dataclass(frozen=True)
class _Task:
    source: str  # relative to the input root, "/"-separated
    identity: str
    path: str  # absolute source path
    output: str  # relative to the output root
    output_root: str


def _row(source: str, identity: str, status: str, output: str = "", face: Detection | None = None
         ) -> dict[str, str]:
    return {
        "source": source, "identity": identity, "output": output,
        "box": _fmt(face.box) if face else "",
        "landmarks": _fmt(np.asarray(face.landmarks).reshape(-1)) if face else "",
        "score": f"{face.score:.4f}" if face else "",
        "status": status,
    }


def output_name(source: str) -> str:
    """Relative crop path for a relative source path (JPEG names kept, others get ``.jpg`` appended)."""
    return source if PurePosixPath(source).suffix.lower() in (".jpg", ".jpeg") else source + ".jpg"


def read_identity_list(spec: str | os.PathLike | Sequence[str] | None) -> set[str]:
    """Identity names from a list, or from a file: the first word of each line; blank lines, ``#``
    comments and purely numeric lines (the counts heading LFW's people files) are ignored."""
    if spec is None:
        return set()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PrepareError(f"exclude_identities file {path} not found; pass a file with one identity "
                               "name per line, or a list like exclude_identities=[name1,name2]")
        names = set()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if words and not words[0].isdigit():
                names.add(words[0])
        return names
    return {str(name) for name in spec}


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _scan_input(input_dir: Path) -> tuple[list[str], int]:
    """All visible files below the identity folders (relative, sorted) and the number of ignored
    root-level files."""
    sources: list[str] = []
    ignored = 0
    for entry in sorted(os.scandir(input_dir), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        for folder, dirs, names in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if _visible(d))
            rel = Path(folder).relative_to(input_dir).as_posix()
            sources.extend(f"{rel}/{n}" for n in sorted(names) if _visible(n))
    return sources, ignored


def _normalise_source(source: str | os.PathLike) -> str:
    text = str(source).replace(os.sep, "/")
    parts = PurePosixPath(text).parts
    if not parts or text.startswith("/") or ".." in parts:
        raise PrepareError(f"files entry {source!r} must be a path relative to the input folder, "
                           "like Person_Name/Person_Name_0001.jpg")
    return "/".join(p for p in parts if p != ".")


@dataclass
class _Plan:
    candidates: list[tuple[str, str]] = field(default_factory=list)  # (source, identity)
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (identity, reason)
    ignored_root_files: int = 0


def _plan(input_dir: Path, files: Sequence[str | os.PathLike] | None, extensions: Sequence[str],
          min_images: int, max_images: int | None, excluded: set[str]) -> _Plan:
    plan = _Plan()
    if files is None:
        sources, plan.ignored_root_files = _scan_input(input_dir)
        explicit = False
    else:
        sources = sorted({_normalise_source(f) for f in files})
        explicit = True
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    per_identity: dict[str, list[str]] = {}
    for source in sources:
        parts = source.split("/")
        identity = parts[0] if len(parts) > 1 else ""
        if not identity:
            plan.skipped[source] = ("", "skipped: not inside an identity folder")
        elif not explicit and PurePosixPath(source).suffix.lower() not in exts:
            plan.skipped[source] = (identity, "skipped: extension not in extensions")
        elif identity in excluded:
            plan.skipped[source] = (identity, "skipped: excluded identity")
        else:
            per_identity.setdefault(identity, []).append(source)
    for identity, members in per_identity.items():
        if len(members) < min_images:
            for source in members:
                reason = f"skipped: identity has {len(members)} < min_images_per_identity={min_images} images"
                plan.skipped[source] = (identity, reason)
            continue
        keep = members[:max_images] if max_images else members
        for source in members[len(keep):]:
            plan.skipped[source] = (identity, f"skipped: beyond max_images_per_identity={max_images}")
        plan.candidates.extend((source, identity) for source in keep)
    plan.candidates.sort()
    return plan


# --------------------------------------------------------------------------------------------------
# Workers

_WORKER: dict[str, Any] = {}


def _build_detector(spec: Mapping[str, Any] | Callable[[], FaceDetector] | None) -> FaceDetector:
    if spec is None:
        return MTCNNDetector()
    if callable(spec):
        return spec()
    spec = dict(spec)
    if "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec)
    return MTCNNDetector(**spec)


def _init_worker(settings: CropSettings, detector_spec: Any, single_thread: bool) -> None:
    if single_thread:
        cv2.setNumThreads(1)  # one process per core: no oversubscription
    _WORKER["settings"] = settings
    _WORKER["detector"] = _build_detector(detector_spec)


def _save_jpeg(image_rgb: np.ndarray, path: Path, quality: int) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, path)


def _in_source_pixels(face: Detection, path: str, shape: tuple[int, ...], max_pixels: int | None) -> Detection:
    """Map a detection on a photo that :func:`read_rgb` downscaled back to the file's own pixels."""
    if not max_pixels or shape[0] * shape[1] * 2 < max_pixels:
        return face  # could not have been downscaled
    from PIL import Image

    with Image.open(path) as original:  # reads the header only
        factor = math.sqrt(original.size[0] * original.size[1] / (shape[0] * shape[1]))
    if factor < 1.0001:
        return face
    return Detection(tuple(v * factor for v in face.box), face.score, face.landmarks * factor)


def _process(task: _Task) -> dict[str, str]:
    """Read, detect, crop and save one photo; never raises (problems become ``failed`` rows)."""
    settings: CropSettings = _WORKER["settings"]
    detector: FaceDetector = _WORKER["detector"]
    try:
        image = read_rgb(task.path, max_pixels=settings.max_pixels, downscale=settings.downscale_large)
    except ImageReadError as err:
        return _row(task.source, task.identity, f"failed: {err.reason}")
    try:
        face = select_face(detector.detect(image), image.shape, settings.face_selection)
        if face is not None:
            crop, status = face_crop(image, face, settings), DETECTED
        else:
            crop, status = center_crop(image, settings), FALLBACK
        _save_jpeg(crop, Path(task.output_root) / task.output, settings.jpeg_quality)
        if face is not None:
            face = _in_source_pixels(face, task.path, image.shape, settings.max_pixels)
        return _row(task.source, task.identity, status, task.output, face)
    except Exception as err:  # noqa: BLE001 - one bad photo must not stop a long run
        message = " ".join(str(err).split())[:200]
        return _row(task.source, task.identity, f"failed: error while processing ({type(err).__name__}: {message})")


def _run_tasks(tasks: list[_Task], settings: CropSettings, detector_spec: Any, workers: int,
               on_row: Callable[[dict[str, str]], None]) -> None:
    """Process tasks in ``workers`` spawned processes (in this process when ``workers <= 1``).

    A process pool that breaks (a worker killed by a crashing decoder, or by the OOM killer) does not
    end the run: the tasks that were in flight are retried one at a time in a fresh single-worker
    pool, and a task that breaks that pool alone is recorded as ``failed``.
    """
    if workers <= 1:
        _init_worker(settings, detector_spec, single_thread=False)
        for task in tasks:
            on_row(_process(task))
        return
    context = multiprocessing.get_context("spawn")  # no fork after threads (OpenCV, torch) started
    pending: deque[_Task] = deque(tasks)
    suspects: deque[_Task] = deque()
    while pending or suspects:
        isolate = bool(suspects)
        queue = suspects if isolate else pending
        n_workers = 1 if isolate else workers
        window = 1 if isolate else workers * 4
        executor = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker,
                                       initargs=(settings, detector_spec, True))
        inflight: dict[Any, _Task] = {}
        broken: list[_Task] = []
        try:
            while (queue or inflight) and not broken:
                while queue and len(inflight) < window:
                    task = queue.popleft()
                    inflight[executor.submit(_process, task)] = task
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = inflight.pop(future)
                    try:
                        on_row(future.result())
                    except BrokenProcessPool:
                        broken.append(task)
        except KeyboardInterrupt:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        if broken:
            executor.shutdown(wait=False, cancel_futures=True)
            lost = broken + list(inflight.values())
            if isolate:
                for task in lost:
                    log.warning("worker process crashed on %s", task.path)
                    on_row(_row(task.source, task.identity, "failed: worker process crashed on this file"))
            else:
                suspects.extend(lost)
        else:
            executor.shutdown(wait=True)


# --------------------------------------------------------------------------------------------------
# The preparation


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
    workers: int = 0
    wall_seconds: float = 0.0
    images_per_second: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            (f"prepared {self.total} files of {self.input_dir} into {self.output_dir} "
             f"(mode={self.mode}, size={self.size})"),
            (f"  detected {self.detected}, fallback_center {self.fallback_center}, failed {self.failed}, "
             f"skipped {self.skipped}"),
            (f"  this run: {self.processed} processed, {self.resumed} already done; "
             f"{self.wall_seconds:.1f} s, {self.images_per_second:.1f} images/s on {self.workers} worker(s)"),
        ]
        for reason, count in sorted(self.failure_reasons.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {count} x {reason}")
        for reason, count in sorted(self.skip_reasons.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {count} x {reason}")
        lines.append(f"  manifest: {Path(self.output_dir) / MANIFEST_NAME}")
        return "\n".join(lines)


def _check_paths(input_dir: Path, output_dir: Path, files: Sequence[Any] | None) -> None:
    if not input_dir.exists():
        raise PrepareError(f"input folder {input_dir} does not exist; pass input=DIR, a folder of "
                           "<identity>/<image> subfolders")
    if not input_dir.is_dir():
        raise PrepareError(f"input {input_dir} is not a folder; pass input=DIR, a folder of "
                           "<identity>/<image> subfolders")
    if output_dir.exists() and not output_dir.is_dir():
        raise PrepareError(f"output {output_dir} exists and is not a folder; pass output=DIR, a new or "
                           "earlier output folder")
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise PrepareError(f"output folder {output_dir} lies inside the input folder {input_dir}; choose "
                           "an output folder outside the input")
    if output_dir in input_dir.parents:
        raise PrepareError(f"output folder {output_dir} contains the input folder {input_dir}; choose an "
                           "output folder that does not hold the input")
    if files is None and not any(e.is_dir() and _visible(e.name) for e in os.scandir(input_dir)):
        raise PrepareError(f"input folder {input_dir} holds no identity folders; expected "
                           f"{input_dir}/<identity>/<image>.jpg")


def _check_settings(output_dir: Path, recorded: dict[str, Any], has_crops: bool) -> None:
    """Refuse to add crops made with other settings to a folder that already holds crops."""
    path = output_dir / SETTINGS_NAME
    if path.is_file() and has_crops:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict):
            if isinstance(previous.get("detector"), dict) and "factory" not in previous["detector"]:
                previous["detector"] = _detector_record(previous["detector"])  # complete older records
            diff = {k: (previous.get(k), v) for k, v in recorded.items() if previous.get(k) != v}
            if diff:
                changes = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in diff.items())
                raise PrepareError(f"output folder {output_dir} was prepared with other settings: {changes}; "
                                   "choose a new output folder, or delete this one to prepare it again")
    _write_json_atomic(path, recorded)


def _detector_record(spec: Any) -> Any:
    """A JSON description of the detector settings; MTCNN keyword arguments are completed with their
    defaults, so ``detector=None`` and the config's explicit defaults record the same thing."""
    if spec is None or (isinstance(spec, Mapping) and "_target_" not in spec):
        defaults = {name: p.default for name, p in inspect.signature(MTCNNDetector).parameters.items()}
        merged = {**defaults, **dict(spec or {})}
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(merged.items())}
    if isinstance(spec, Mapping):
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(spec).items()}
    if isinstance(spec, partial):
        return {"factory": getattr(spec.func, "__qualname__", repr(spec.func)), **spec.keywords}
    return {"factory": getattr(spec, "__qualname__", repr(spec))}


def prepare_collection(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    mode: str = "crop",
    size: int = 128,
    margin: float = 1.3,
    border: str = "constant",
    fallback_fraction: float = 0.6,
    fallback_size: int | None = None,
    face_selection: str = "largest",
    workers: int = 2,
    min_images_per_identity: int = 1,
    max_images_per_identity: int | None = None,
    exclude_identities: str | os.PathLike | Sequence[str] | None = None,
    jpeg_quality: int = 95,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    downscale_large: bool = True,
    retry_failed: bool = False,
    detector: Mapping[str, Any] | Callable[[], FaceDetector] | None = None,
    files: Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Detect and crop every photo of ``input_dir`` (or only ``files``, paths relative to it) into
    ``output_dir``; resumable and idempotent. See the module docstring for the layout and statuses.

    ``detector``: keyword arguments of :class:`MTCNNDetector`, a mapping with a Hydra ``_target_``,
    or a picklable zero-argument factory returning any :class:`FaceDetector`; each worker process
    builds its own once. Raises :class:`PrepareError` for bad paths or settings.
    """
    started = time.perf_counter()
    input_dir = Path(input_dir).expanduser().resolve()
    output_dir = Path(output_dir).expanduser().resolve()
    settings = CropSettings(mode=mode, size=int(size), margin=float(margin), border=border,
                            fallback_fraction=float(fallback_fraction),
                            fallback_size=None if fallback_size is None else int(fallback_size),
                            face_selection=face_selection, jpeg_quality=int(jpeg_quality),
                            max_pixels=None if not max_pixels else int(max_pixels),
                            downscale_large=bool(downscale_large))
    settings.validate()
    if min_images_per_identity < 0 or (max_images_per_identity is not None and max_images_per_identity < 1):
        raise PrepareError("min_images_per_identity must be >= 0 and max_images_per_identity >= 1 or null")
    _check_paths(input_dir, output_dir, files)
    excluded = read_identity_list(exclude_identities)
    plan = _plan(input_dir, files, extensions, int(min_images_per_identity),
                 None if max_images_per_identity is None else int(max_images_per_identity), excluded)

    output_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(output_dir):
        return _prepare_locked(input_dir, output_dir, settings, plan, detector, workers, retry_failed,
                               progress, started)


LOCK_TIMEOUT_S = 6 * 3600


@contextlib.contextmanager
def _exclusive(output_dir: Path):
    """One preparation at a time per output folder (an advisory lock; a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(output_dir / ".prepare.lock", "w") as handle:
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


def _prepare_locked(input_dir: Path, output_dir: Path, settings: CropSettings, plan: _Plan, detector: Any,
                    workers: int, retry_failed: bool, progress: bool, started: float) -> PrepareSummary:
    rows = {row["source"]: row for row in read_manifest(output_dir)}
    recorded = {k: v for k, v in asdict(settings).items() if k not in ("max_pixels", "downscale_large")}
    recorded["detector"] = _detector_record(detector)
    _check_settings(output_dir, recorded, any(r["status"] in USABLE_STATUSES for r in rows.values()))

    selection: list[str] = []
    for source, (identity, reason) in plan.skipped.items():
        old = rows.get(source)
        if old and old["output"]:
            (output_dir / old["output"]).unlink(missing_ok=True)  # filters win over earlier crops
        rows[source] = _row(source, identity, reason)
        selection.append(source)

    taken = {row["output"]: s for s, row in rows.items() if row["output"]}
    tasks: list[_Task] = []
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
            rows[source] = _row(source, identity, f"failed: output name {out} already used by {taken[out]}")
            continue
        taken[out] = source
        rows.pop(source, None)
        tasks.append(_Task(source, identity, str(input_dir / source), out, str(output_dir)))
    _write_manifest_atomic(output_dir, rows.values())

    workers = max(1, int(workers))
    summary = PrepareSummary(input_dir=str(input_dir), output_dir=str(output_dir), mode=settings.mode,
                             size=settings.size, resumed=resumed, workers=min(workers, max(1, len(tasks))),
                             ignored_root_files=plan.ignored_root_files)
    if tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=f"prepare {input_dir.name}", unit="img", disable=not progress,
                   dynamic_ncols=True, mininterval=1.0)
        counts: Counter[str] = Counter()
        with open(output_dir / MANIFEST_NAME, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)

            def on_row(row: dict[str, str]) -> None:
                writer.writerow(row)
                handle.flush()
                rows[row["source"]] = row
                counts[row["status"].split(":")[0]] += 1
                bar.update(1)
                if bar.n % 50 == 0 or bar.n == bar.total:
                    bar.set_postfix(counts, refresh=False)

            try:
                _run_tasks(tasks, settings, detector, summary.workers, on_row)
            finally:
                bar.close()
        summary.processed = len(tasks)
    _write_manifest_atomic(output_dir, rows.values())

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
    _write_json_atomic(output_dir / SUMMARY_NAME, summary.to_dict())
    if progress:
        print(summary.format(), flush=True)
    return summary


def _reason_kind(status: str) -> str:
    """Group statuses for the summary: the reason without its variable detail in parentheses."""
    return status.split(" (", 1)[0]


__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "SUMMARY_NAME",
    "CropSettings",
    "PrepareError",
    "PrepareSummary",
    "center_crop",
    "crop_path_map",
    "face_crop",
    "output_name",
    "parse_numbers",
    "prepare_collection",
    "read_identity_list",
    "read_manifest",
    "square_crop",
]
