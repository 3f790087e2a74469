"""How many photos of a collection the detector finds a face in, without preparing crops.

    STN_FACE_DATA=../shared/data .venv/bin/python experiments/data_preparation/count_detections.py \
        $STN_FACE_DATA/celeba-subset --manifest .cache/prepared/celeba-subset-crop128/manifest.csv \
        --out experiments/data_preparation/counts_celeba_torch.json

Every image under the folder (or only those a ``--files`` list names, relative paths) is read as the
preparation reads it (:func:`stn_face.data.images.read_rgb`), run through ``detect_batch`` and one face
is kept by the preparation's default policy (``largest``). With ``--manifest`` (one made by
``stn-face-prepare`` with another detector) the detected faces are compared photo by photo: counts both
ways, and the shift of the landmarks in pixels and inter-ocular distances.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from stn_face.data.detect import MTCNNDetector, select_face
from stn_face.data.images import read_rgb

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def compare(found: dict[str, np.ndarray | None], manifest: Path) -> dict:
    rows = {r["source"]: r for r in csv.DictReader(manifest.open())}
    theirs = {s: np.array(r["landmarks"].split(), float).reshape(5, 2) for s, r in rows.items()
              if r["status"] == "detected" and s in found}
    both = [s for s in theirs if found[s] is not None]
    shift = np.array([found[s] - theirs[s] for s in both])  # (N, 5, 2) ours minus theirs
    iod = np.array([np.linalg.norm(theirs[s][1] - theirs[s][0]) for s in both])
    return {"manifest": str(manifest), "compared_photos": sum(1 for s in found if s in rows),
            "detected_by_both": len(both),
            "only_manifest": sorted(s for s in theirs if found[s] is None),
            "only_ours": sorted(s for s in found if found[s] is not None and s in rows and s not in theirs),
            "median_shift_px_xy_per_point": np.median(shift, axis=0).round(2).tolist(),
            "median_eye_shift_iod_xy": np.median(shift[:, :2].mean(axis=1) / iod[:, None], axis=0).round(4).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=Path, help="a text file of paths relative to the folder")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--chunk", type=int, default=32, help="photos per detect_batch call")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.files:
        sources = [line.strip() for line in args.files.read_text().splitlines() if line.strip()]
    else:
        sources = sorted(str(p.relative_to(args.folder)) for p in args.folder.rglob("*")
                         if p.suffix.lower() in EXTENSIONS and p.parent != args.folder)
    detector = MTCNNDetector(backend=args.backend)
    found: dict[str, np.ndarray | None] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(sources), args.chunk):
        part = sources[start:start + args.chunk]
        images = [read_rgb(args.folder / s) for s in part]
        for source, image, faces in zip(part, images, detector.detect_batch(images)):
            face = select_face(faces, image.shape, "largest")
            found[source] = None if face is None else face.landmarks.astype(np.float64)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    report = {"folder": str(args.folder), "photos": len(sources),
              "with_face": sum(1 for v in found.values() if v is not None),
              "no_face": sorted(s for s, v in found.items() if v is None),
              "cpu_ms_per_photo": round(1000 * cpu / len(sources), 1),
              "images_per_s_wall": round(len(sources) / wall, 1), "detector": detector.describe()}
    if args.manifest:
        report["against_manifest"] = compare(found, args.manifest)
    print(json.dumps({k: v for k, v in report.items() if k != "detector"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
