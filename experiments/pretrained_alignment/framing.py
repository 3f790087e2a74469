"""Where dlib's face chip lies in an MTCNN crop: the framing a spatial transformer in front of
``backbone=dlib_resnet`` should start from, and the crop margin wide enough to hold it.

On real photos (LFW deep-funneled and the CelebA subset of ``$STN_FACE_DATA``) this runs the project's
MTCNN detector (the face the preparation keeps: ``face_selection=largest``) and dlib's own 5-point
alignment (frontal face detector, ``shape_predictor_5_face_landmarks``, ``get_face_chip_details`` at
150 px, padding 0.25: what ``dlib_reference.py`` and dlib's face recogniser use), and writes dlib's chip
square in the normalised coordinates of the MTCNN crop of margin M (``[-1, 1]``, ``align_corners=False``,
the spatial transformer's convention): the similarity ``(scale, rotation, tx, ty)`` that maps the
transformer's output grid onto the chip. Per margin it reports the share of photos whose whole chip lies
inside the crop and the median framing; the smallest margin holding >= 99 % of the chips is chosen, at
the crop size that keeps the chip's pixel density (150 / median scale, rounded up to a multiple of 8).

Then, on ``--compare`` of the measured photos (evenly spaced over both sets), it checks the chosen start against dlib's chip: the wide crop
seen through the transformer's start view (``init_frame`` = the median framing) and the plain 1.3x crop
resized to 150 px, each compared with dlib's own chip (mean absolute pixel difference, and the cosine
similarity of the two ``dlib_resnet`` descriptors)::

    STN_FACE_DATA=/path/to/data python experiments/pretrained_alignment/framing.py --output framing_dlib.json

Needs ``dlib`` and ``face-recognition-models`` (the dev extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stn_face.paths import data_root

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # what dlib's face_recognition_model_v1 uses
MARGINS = (1.3, 1.6, 2.0, 2.2)
INSIDE_SHARE = 0.99  # the chosen margin holds at least this share of the chips
PLAIN = {"margin": 1.3, "size": 128}  # the project's default crop (conf/_data_base.yaml)
SIZE_STEP = 8  # crop sizes are rounded up to a multiple of this


# ------------------------------------------------------------------------------------ the geometry
def chip_to_image(rect: tuple[float, float, float, float], angle: float, size: int) -> np.ndarray:
    """dlib's map ``(3, 3)`` from chip pixels to image pixels (both with pixel centres at integers) of a
    ``chip_details`` with ``rect = (left, top, right, bottom)``, ``angle`` (radians) and ``size`` rows and
    columns: ``get_mapping_to_chip`` inverted. dlib sends chip pixel ``(0, 0)`` to the rectangle's top-left
    corner, ``(size - 1, 0)`` to its top-right and ``(size - 1, size - 1)`` to its bottom-right, each
    turned by ``angle`` about the rectangle's centre."""
    left, top, right, bottom = rect
    centre = np.array([(left + right) / 2.0, (top + bottom) / 2.0])
    cos, sin = math.cos(angle), math.sin(angle)
    turn = np.array([[cos, -sin], [sin, cos]])

    def turned(x: float, y: float) -> np.ndarray:
        return centre + turn @ (np.array([x, y]) - centre)

    p1, p2, p3 = turned(left, top), turned(right, top), turned(right, bottom)
    matrix = np.eye(3)
    matrix[:2, 0] = (p2 - p1) / (size - 1)
    matrix[:2, 1] = (p3 - p2) / (size - 1)
    matrix[:2, 2] = p1
    return matrix


def normalized_to_pixel(size: int) -> np.ndarray:
    """``(3, 3)`` from normalised ``align_corners=False`` coordinates of a ``size`` square to its pixel
    coordinates (pixel centres at integers): ``u = ((x + 1) size - 1) / 2``."""
    return np.array([[size / 2.0, 0.0, (size - 1) / 2.0], [0.0, size / 2.0, (size - 1) / 2.0], [0.0, 0.0, 1.0]])


def image_to_crop(square: tuple[int, int, int]) -> np.ndarray:
    """``(3, 3)`` from image pixels to the normalised coordinates of the crop cut from the pixel square
    ``(x0, y0, s)`` (``stn_face.data.prepare.crop.crop_square``); the crop's resize to its final size keeps
    these coordinates."""
    x0, y0, side = square
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    return np.linalg.inv(normalized_to_pixel(side)) @ shift


def chip_frame(chip_matrix: np.ndarray, chip_size: int, square: tuple[int, int, int]) -> np.ndarray:
    """The output-to-input matrix ``(3, 3)`` that samples dlib's chip out of a crop: normalised chip
    coordinates -> normalised coordinates of the crop of pixel square ``square``. ``chip_matrix`` is
    :func:`chip_to_image`'s."""
    return image_to_crop(square) @ chip_matrix @ normalized_to_pixel(chip_size)


def frame_of(matrix: np.ndarray) -> dict[str, float]:
    """``{scale, rotation, tx, ty}`` of a similarity matrix ``(3, 3)`` (rotation in radians): the inverse
    of ``stn_face.geometry.similarity_matrix``."""
    a, c = matrix[0, 0], matrix[1, 0]
    return {"scale": float(math.hypot(a, c)), "rotation": float(math.atan2(c, a)),
            "tx": float(matrix[0, 2]), "ty": float(matrix[1, 2])}


def square_inside(matrix: np.ndarray) -> bool:
    """Whether the output square ``[-1, 1]²`` mapped by ``matrix`` ``(3, 3)`` lies inside ``[-1, 1]²``."""
    corners = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    mapped = corners @ matrix.T
    return bool(np.all(np.abs(mapped[:, :2] / mapped[:, 2:]) <= 1.0))


# ------------------------------------------------------------------------------------- the photos
def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` of the sorted ``files``, evenly spaced (every identity's share, no random choice)."""
    files = sorted(files)
    count = min(count, len(files))
    return [files[i * len(files) // count] for i in range(count)]


def photo_sets(root: Path, lfw: int, celeba: int) -> list[tuple[str, Path]]:
    sets = [("lfw", spread(list((root / "lfw" / "lfw-deepfunneled").glob("*/*.jpg")), lfw)),
            ("celeba", spread(list((root / "celeba-subset").glob("*/*.jpg")), celeba))]
    return [(name, path) for name, paths in sets for path in paths]


def dlib_models() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: dlib's model files are missing: pip install face-recognition-models (the dev extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibAligner:
    """dlib's 5-point chip of the face an MTCNN box points at: dlib's detection whose centre lies in the box
    (the largest of them), its 5 landmarks, ``get_face_chip_details`` / ``get_face_chip``."""

    def __init__(self, models: Path | None = None) -> None:
        import dlib

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str((models or dlib_models()) / "shape_predictor_5_face_landmarks.dat"))

    def shape(self, image: np.ndarray, box: tuple[float, float, float, float]):
        """dlib's 5 landmarks of the face in MTCNN's ``box`` ``(x1, y1, x2, y2)``, or None (dlib finds no
        face there)."""
        x1, y1, x2, y2 = box
        found = [r for r in self.detector(image, 1)
                 if x1 <= (r.left() + r.right()) / 2 <= x2 and y1 <= (r.top() + r.bottom()) / 2 <= y2]
        if not found:
            return None
        return self.predictor(image, max(found, key=lambda r: r.area()))

    def chip_matrix(self, shape) -> np.ndarray:
        details = self.dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        rect = details.rect
        return chip_to_image((rect.left(), rect.top(), rect.right(), rect.bottom()), details.angle, CHIP_SIZE)

    def chip(self, image: np.ndarray, shape) -> np.ndarray:
        return self.dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def warp_chip(image: np.ndarray, chip_matrix: np.ndarray) -> np.ndarray:
    """The chip cut by :func:`chip_to_image`'s map with OpenCV (bilinear): equals dlib's chip when that map
    is dlib's (the self-check of the geometry)."""
    import cv2

    return cv2.warpAffine(image, chip_matrix[:2], (CHIP_SIZE, CHIP_SIZE),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


# ---------------------------------------------------------------------------------- the measurement
def measure(photos: list[tuple[str, Path]], margins: tuple[float, ...], aligner: DlibAligner,
            detector) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Per photo with a face found by both: its set, the chip's framing per margin and the self-check
    difference; and per set the counts of photos, of those without an MTCNN face and without dlib's."""
    from stn_face.data.detect import select_face
    from stn_face.data.images import read_rgb
    from stn_face.data.prepare.crop import crop_square

    rows, counts = [], {}
    for name, path in photos:
        count = counts.setdefault(name, {"photos": 0, "no_mtcnn_face": 0, "no_dlib_face": 0, "measured": 0})
        count["photos"] += 1
        image = read_rgb(path)
        face = select_face(detector.detect(image), image.shape, "largest")
        if face is None:
            count["no_mtcnn_face"] += 1
            continue
        shape = aligner.shape(image, face.box)
        if shape is None:
            count["no_dlib_face"] += 1
            continue
        count["measured"] += 1
        matrix = aligner.chip_matrix(shape)
        check = np.abs(warp_chip(image, matrix).astype(np.float64) - aligner.chip(image, shape)).mean()
        row = {"set": name, "photo": str(path), "self_check_mad": float(check), "margins": {}}
        for margin in margins:
            square = crop_square(face.center, margin * max(face.width, face.height))
            frame = chip_frame(matrix, CHIP_SIZE, square)
            row["margins"][str(margin)] = {**frame_of(frame), "inside": square_inside(frame)}
        rows.append(row)
    return rows, counts


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}


def summarise(rows: list[dict[str, Any]], margins: tuple[float, ...]) -> dict[str, Any]:
    """Per margin: the share of chips inside the crop (all photos and per set), the framing's statistics
    and the crop size that keeps the chip's pixel density at the median scale."""
    out = {}
    for margin in margins:
        frames = [row["margins"][str(margin)] for row in rows]
        inside = {"all": float(np.mean([f["inside"] for f in frames]))}
        for name in sorted({row["set"] for row in rows}):
            inside[name] = float(np.mean([row["margins"][str(margin)]["inside"] for row in rows if row["set"] == name]))
        stats = {key: _stats([f[key] for f in frames]) for key in ("scale", "rotation", "tx", "ty")}
        out[str(margin)] = {"inside": inside, **stats,
                            "crop_size_for_chip_density": CHIP_SIZE / stats["scale"]["median"]}
    return out


def choose(summary: dict[str, Any], margins: tuple[float, ...]) -> dict[str, Any]:
    """The smallest margin whose crops hold at least :data:`INSIDE_SHARE` of the chips, its crop size
    (rounded up to :data:`SIZE_STEP`) and its median framing (the transformer's ``init_frame``)."""
    for margin in margins:
        entry = summary[str(margin)]
        if entry["inside"]["all"] >= INSIDE_SHARE:
            size = int(math.ceil(entry["crop_size_for_chip_density"] / SIZE_STEP) * SIZE_STEP)
            frame = {key: round(entry[key]["median"], 4) for key in ("scale", "rotation", "tx", "ty")}
            return {"margin": margin, "size": size, "init_frame": frame}
    raise SystemExit(f"error: no margin of {list(margins)} holds {INSIDE_SHARE:.0%} of dlib's chips; "
                     "measure wider margins with --margins")


# ----------------------------------------------------------------------------------- the comparison
def compare(rows: list[dict[str, Any]], chosen: dict[str, Any], aligner: DlibAligner, detector,
            count: int) -> dict[str, Any]:
    """On ``count`` of the measured photos (evenly spaced over both sets): dlib's chip against (a) the chosen wide crop through the
    identity transformer's fixed ``init_frame`` view and (b) the plain 1.3x crop resized to 150 px. Mean
    absolute difference in 0-255 pixel values, and the cosine similarity of dlib_resnet's descriptors."""
    import torch

    from stn_face.data.detect import select_face
    from stn_face.data.images import MEAN, STD, read_rgb
    from stn_face.data.prepare import CropSettings
    from stn_face.data.prepare.crop import crop_photo, jpeg_roundtrip
    from stn_face.geometry import resize_antialiased
    from stn_face.nn import DlibResNet, SpatialTransformer
    from stn_face.nn.pretrained import load_pretrained

    wide_settings = CropSettings(size=chosen["size"], margin=chosen["margin"])
    plain_settings = CropSettings(**PLAIN)
    start = SpatialTransformer("identity", output_size=(CHIP_SIZE, CHIP_SIZE), input_size=chosen["size"],
                               init_frame=chosen["init_frame"])
    net = load_pretrained(DlibResNet(weights=str(dlib_models() / "dlib_face_recognition_resnet_model_v1.dat"))).eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def tensor(images: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return (x - mean) / std

    def pixels(x: torch.Tensor) -> np.ndarray:
        return ((x * std + mean) * 255.0).permute(0, 2, 3, 1).numpy()

    count = min(count, len(rows))
    picked = [rows[i * len(rows) // count] for i in range(count)]
    chips, wide, plain = [], [], []
    for row in picked:
        image = read_rgb(row["photo"])
        detections = detector.detect(image)
        face = select_face(detections, image.shape, "largest")
        chips.append(aligner.chip(image, aligner.shape(image, face.box)))
        wide.append(jpeg_roundtrip(crop_photo(image, wide_settings, detections).crop, wide_settings.jpeg_quality))
        plain.append(jpeg_roundtrip(crop_photo(image, plain_settings, detections).crop, plain_settings.jpeg_quality))
    with torch.no_grad():
        views = {"chip": tensor(chips),
                 "wide_crop_init_frame": start(tensor(wide))[0],
                 "plain_crop_resized": resize_antialiased(tensor(plain), (CHIP_SIZE, CHIP_SIZE))}
        embeddings = {name: torch.nn.functional.normalize(net(x), dim=1) for name, x in views.items()}
    reference = pixels(views["chip"])
    result = {"photos": {name: sum(row["set"] == name for row in picked) for name in sorted({r["set"] for r in picked})}}
    for name in ("wide_crop_init_frame", "plain_crop_resized"):
        mad = np.abs(pixels(views[name]) - reference).mean(axis=(1, 2, 3))
        cosine = (embeddings[name] * embeddings["chip"]).sum(dim=1).numpy()
        result[name] = {"pixel_mad": _stats(mad.tolist()), "cosine_to_chip": _stats(cosine.tolist())}
    return result


def machine() -> dict[str, Any]:
    from stn_face.machine import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=int, default=250, help="LFW deep-funneled photos (evenly spaced)")
    parser.add_argument("--celeba", type=int, default=250, help="CelebA-subset photos (evenly spaced)")
    parser.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    parser.add_argument("--compare", type=int, default=100, help="photos of the pixel and descriptor comparison")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("framing_dlib.json"))
    args = parser.parse_args()

    import torch

    from stn_face.data.detect import MTCNNDetector

    torch.set_num_threads(1)
    margins = tuple(sorted(args.margins))
    began = time.perf_counter()
    aligner, detector = DlibAligner(), MTCNNDetector()
    rows, counts = measure(photo_sets(data_root(), args.lfw, args.celeba), margins, aligner, detector)
    if not rows:
        raise SystemExit("error: no photo had a face found by both MTCNN and dlib; check STN_FACE_DATA")
    summary = summarise(rows, margins)
    chosen = choose(summary, margins)
    measured = time.perf_counter()
    comparison = compare(rows, chosen, aligner, detector, args.compare)
    result = {
        "what": "dlib's 150 px 5-point chip (padding 0.25) in the normalised [-1, 1] coordinates "
                "(align_corners=False) of the MTCNN crop of each margin: the similarity (scale, rotation "
                "in radians, tx, ty) mapping the transformer's output grid onto the chip",
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {"measure": round(measured - began, 1), "compare": round(time.perf_counter() - measured, 1)},
        "counts": counts, "photos_measured": len(rows),
        "self_check_mad": _stats([row["self_check_mad"] for row in rows]),
        "margins": summary, "chosen": {**chosen, "inside_share_required": INSIDE_SHARE, "plain": PLAIN},
        "comparison": comparison,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("counts", "chosen", "comparison")}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
