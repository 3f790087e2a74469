"""Workers: read, detect, crop and save photos, and the two ways to run many of them.

- On the CPU with ``workers > 1``: spawned worker processes, each building its detector once and
  taking chunks of up to ``photos_per_batch`` photos (one ``detect_batch`` call per chunk where the detector
  has it). A worker that dies (a crashing decoder) costs only its file, recorded as ``failed``.
- On an accelerator (a detector whose ``device`` is not the CPU), or with ``workers=1``: this process
  feeds the detector batches of ``photos_per_batch`` photos while ``workers`` threads read the next batch and
  write the crops (OpenCV and PIL decode and encode without holding the GIL).

A detector without ``detect_batch`` is called once per photo; problems with one photo (unreadable,
an exception in the detector) become that photo's ``failed`` row and never stop the run.
"""

from __future__ import annotations

import inspect
import logging
import math
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stn_face.data.detect import Detection, FaceDetector, MTCNNDetector
from stn_face.data.images import ImageReadError, read_rgb
from stn_face.data.prepare.crop import crop_photo, encode_jpeg
from stn_face.data.prepare.manifest import manifest_row
from stn_face.data.prepare.plan import Task
from stn_face.data.prepare.settings import CropSettings, PrepareError
from stn_face.files import atomic_write

log = logging.getLogger(__name__)

Row = dict[str, str]
DetectorSpec = Mapping[str, Any] | Callable[..., FaceDetector] | None


def is_cpu(device: Any) -> bool:
    return str(device).split(":", 1)[0] == "cpu"


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def build_detector(spec: DetectorSpec, device: str = "cpu") -> FaceDetector:
    """The detector that ``spec`` describes (see :func:`prepare_collection`), on ``device``.

    ``device`` is passed to detectors that take a ``device`` argument (unless ``spec`` names one); a
    detector without one runs on the CPU, and asking it for another device is an input error.
    """
    kwargs: dict[str, Any] = {}
    if spec is None or (isinstance(spec, Mapping) and "_target_" not in spec):
        factory = target = MTCNNDetector
        kwargs = dict(spec or {})
    elif isinstance(spec, Mapping):
        from hydra.utils import get_object, instantiate

        target = get_object(spec["_target_"])
        factory = partial(instantiate, dict(spec))
    else:
        factory = target = spec
    if not (isinstance(spec, Mapping) and "device" in spec):
        if _accepts(target, "device"):
            kwargs["device"] = device
        elif not is_cpu(device):
            name = getattr(target, "__qualname__", repr(target))
            raise PrepareError(f"device={device}: the detector {name} has no device argument and runs on the CPU; "
                               "use device=cpu")
    return factory(**kwargs)


def detector_device(detector: Any, requested: str) -> str:
    """Where a built detector runs: its own ``device`` when it has one, else the requested one."""
    return str(getattr(detector, "device", requested))


def detect_all(detector: FaceDetector, images: Sequence[np.ndarray]) -> list[list[Detection] | Exception]:
    """The detections of every image: one ``detect_batch`` call where the detector has it, else one
    ``detect`` per image. An image the detector fails on gets its exception in its place."""
    detect_batch = getattr(detector, "detect_batch", None)
    if detect_batch is not None and images:
        try:
            return list(detect_batch(list(images)))
        except Exception:  # find the photo that failed: one at a time, below
            log.debug("detect_batch failed on %d images; detecting one by one", len(images), exc_info=True)
    results: list[list[Detection] | Exception] = []
    for image in images:
        try:
            results.append(detector.detect(image))
        except Exception as err:  # noqa: BLE001 - one bad photo must not stop a long run
            results.append(err)
    return results


def _failure(task: Task, err: Exception) -> Row:
    message = " ".join(str(err).split())[:200]
    return manifest_row(task.source, task.identity,
                        f"failed: error while processing ({type(err).__name__}: {message})")


def _save_jpeg(image_rgb: np.ndarray, path: Path, quality: int) -> None:
    data = encode_jpeg(image_rgb, quality)
    with atomic_write(path, "wb", fsync=False) as handle:
        handle.write(data)


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


def read_photo(task: Task, settings: CropSettings) -> np.ndarray | Row:
    """The photo of a task, or its ``failed`` row when it cannot be read."""
    try:
        return read_rgb(task.path, max_pixels=settings.max_pixels, downscale=settings.downscale_large)
    except ImageReadError as err:
        return manifest_row(task.source, task.identity, f"failed: {err.reason}")


def _finish(task: Task, image: np.ndarray | Row, found: list[Detection] | Exception | None,
            settings: CropSettings) -> Row:
    """Crop and save one read and detected photo; its manifest row (never raises)."""
    if isinstance(image, dict):
        return image
    if isinstance(found, Exception):
        return _failure(task, found)
    try:
        crop, status, face = crop_photo(image, settings, found)
        _save_jpeg(crop, Path(task.output_root) / task.output, settings.jpeg_quality)
        if face is not None:
            face = _in_source_pixels(face, task.path, image.shape, settings.max_pixels)
        return manifest_row(task.source, task.identity, status, task.output, face)
    except Exception as err:  # noqa: BLE001 - one bad photo must not stop a long run
        return _failure(task, err)


def process_batch(tasks: Sequence[Task], photos: Sequence[np.ndarray | Row], settings: CropSettings,
                  detector: FaceDetector, mapper: Callable[..., Iterable[Row]] = map) -> list[Row]:
    """Detect faces on a batch of read photos at once, then crop and save each (through ``mapper``,
    e.g. a thread pool's ``map``); one row per task."""
    images = [p for p in photos if isinstance(p, np.ndarray)]
    found = iter(detect_all(detector, images))
    detections = [next(found) if isinstance(p, np.ndarray) else None for p in photos]
    return list(mapper(_finish, tasks, photos, detections, [settings] * len(tasks)))


def run_in_process(tasks: Sequence[Task], settings: CropSettings, detector: FaceDetector, photos_per_batch: int,
                   threads: int, on_row: Callable[[Row], None]) -> None:
    """All tasks in this process, the detector fed batches of ``photos_per_batch`` while ``threads`` threads
    read the next batch (the way to keep an accelerator busy)."""
    batches = [tasks[i:i + photos_per_batch] for i in range(0, len(tasks), photos_per_batch)]
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="prepare-io") as pool:
        reading = [pool.submit(read_photo, task, settings) for task in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            photos = [future.result() for future in reading]
            if index + 1 < len(batches):  # read ahead while the detector works on this batch
                reading = [pool.submit(read_photo, task, settings) for task in batches[index + 1]]
            for row in process_batch(batch, photos, settings, detector, pool.map):
                on_row(row)


_WORKER: dict[str, Any] = {}


def _init_worker(settings: CropSettings, detector_spec: DetectorSpec, device: str) -> None:
    # one process per core: no oversubscription by OpenCV's or (a torch detector's) torch's threads
    cv2.setNumThreads(1)
    _WORKER["settings"] = settings
    _WORKER["detector"] = build_detector(detector_spec, device)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _process_chunk(tasks: list[Task]) -> list[Row]:
    settings: CropSettings = _WORKER["settings"]
    photos = [read_photo(task, settings) for task in tasks]
    return process_batch(tasks, photos, settings, _WORKER["detector"])


def run_in_processes(tasks: Sequence[Task], settings: CropSettings, detector_spec: DetectorSpec, device: str,
                     workers: int, photos_per_batch: int, on_row: Callable[[Row], None]) -> None:
    """Process tasks in ``workers`` spawned processes, in chunks of up to ``photos_per_batch``.

    A process pool that breaks (a worker killed by a crashing decoder, or by the OOM killer) does not
    end the run: the tasks that were in flight are retried in a fresh single-worker pool, one in
    flight at a time (a crash takes every queued task of its pool down with it); a task that breaks
    that pool alone is recorded as ``failed`` and the others go on in a fresh pool.
    """
    context = multiprocessing.get_context("spawn")  # no fork after threads (OpenCV, torch) started
    pending: deque[Task] = deque(tasks)
    suspects: deque[Task] = deque()
    while pending or suspects:
        isolate = bool(suspects)
        queue = suspects if isolate else pending
        n_workers = 1 if isolate else workers
        # chunks small enough that every worker gets some; one queued per worker keeps them all busy
        chunk = 1 if isolate else max(1, min(photos_per_batch, math.ceil(len(queue) / n_workers)))
        # isolating: one task in flight, so the task that breaks the pool is the only one lost with it
        window = 1 if isolate else 2 * n_workers
        executor = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker,
                                       initargs=(settings, detector_spec, device))
        inflight: dict[Any, list[Task]] = {}
        broken: list[Task] = []
        try:
            while (queue or inflight) and not broken:
                while queue and len(inflight) < window:
                    part = [queue.popleft() for _ in range(min(chunk, len(queue)))]
                    inflight[executor.submit(_process_chunk, part)] = part
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    part = inflight.pop(future)
                    try:
                        rows = future.result()
                    except BrokenProcessPool:
                        broken.extend(part)
                        continue
                    for row in rows:
                        on_row(row)
        except KeyboardInterrupt:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        if broken:
            executor.shutdown(wait=False, cancel_futures=True)
            lost = broken + [task for part in inflight.values() for task in part]
            if isolate:
                for task in lost:
                    log.warning("worker process crashed on %s", task.path)
                    on_row(manifest_row(task.source, task.identity, "failed: worker process crashed on this file"))
            else:
                suspects.extend(lost)
        else:
            executor.shutdown(wait=True)
