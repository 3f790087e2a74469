"""``stn-face-visualize ckpt=PATH input=DIR_OR_IMAGE``: what the learned alignment does, as a PNG grid.

Each input face (the crop the network gets, resized to its ``image_size``) is drawn with the
quadrilateral the spatial transformer samples (:func:`stn_face.geometry.corners`, green, its top-left
corner marked red), and the aligned face the backbone sees beside it. Raw photos go through the
training MTCNN crop first; ``cropped=true`` takes face crops as they are.

Example::

    stn-face-visualize ckpt=last.ckpt input=$STN_FACE_DATA/lfw/lfw-deepfunneled/Aaron_Peirsol max_images=8
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
import numpy as np
from omegaconf import DictConfig

from stn_face.config import CONF_DIR
from stn_face.errors import InputError, friendly_errors

USAGE = "usage: stn-face-visualize ckpt=PATH input=DIR_OR_IMAGE [output=FILE.png] [max_images=N]"
CAPTION = 18


def quad_pixels(matrices: np.ndarray, tile: int) -> np.ndarray:
    """Sampled quadrilaterals ``(N, 4, 2)`` in pixel coordinates of an input drawn ``tile`` pixels wide
    (normalised ``align_corners=False`` coordinates: ``u = ((x + 1) * tile - 1) / 2``)."""
    import torch

    from stn_face.geometry import corners, to_pixel_points

    return to_pixel_points(corners(torch.as_tensor(matrices, dtype=torch.float64)), tile, tile).numpy()


def draw_pair(face: np.ndarray, aligned: np.ndarray, quad: np.ndarray, tile: int, caption: str) -> np.ndarray:
    """One cell: the input with its quadrilateral | the aligned face, over a caption strip."""
    import cv2

    left = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_LINEAR if face.shape[0] < tile else cv2.INTER_AREA)
    right = cv2.resize(aligned, (tile, tile), interpolation=cv2.INTER_LINEAR)
    left = np.ascontiguousarray(left)
    thickness = max(1, tile // 112)
    points = np.round(quad * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(left, [points.reshape(-1, 1, 2)], isClosed=True, color=(0, 255, 0), thickness=thickness,
                  lineType=cv2.LINE_AA, shift=4)
    cv2.circle(left, tuple(int(v) for v in points[0]), 3 * thickness * 16, (255, 0, 0), -1, cv2.LINE_AA, shift=4)
    cell = np.full((tile + CAPTION, 2 * tile + 4, 3), 255, np.uint8)
    cell[:tile, :tile] = left
    cell[:tile, tile + 4:] = right
    text = caption if len(caption) <= 2 * tile // 7 else "..." + caption[-(2 * tile // 7 - 3):]
    cv2.putText(cell, text, (2, tile + CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def grid(cells: list[np.ndarray], columns: int, gap: int = 8) -> np.ndarray:
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    height, width = cells[0].shape[:2]
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, cell in enumerate(cells):
        r, c = divmod(index, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        canvas[y:y + height, x:x + width] = cell
    return canvas


def run(cfg: DictConfig) -> Path:
    from PIL import Image

    from stn_face.cli_utils import list_images, require_input, resolve_checkpoint_path
    from stn_face.data.images import ImageReadError, read_rgb

    ckpt = resolve_checkpoint_path(require_input(cfg.get("ckpt"), f"missing ckpt=PATH; {USAGE}"))
    source = Path(str(require_input(cfg.get("input"), f"missing input=DIR; {USAGE}"))).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source}; pass input=DIR (a folder of photos) or one image")
    if source.is_dir():
        names = list_images(source, list(cfg.extensions))[: int(cfg.max_images)]
        files = [source / n for n in names]
    else:
        names, files = [source.name], [source]
    if not files:
        raise InputError(f"no images found below {source}")
    from stn_face.embedder import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device)
    faces, captions = [], []
    for name, file in zip(names, files):
        try:
            image = read_rgb(file)
        except ImageReadError as error:
            print(f"warning: skipped {name}: {error.reason}", file=sys.stderr)
            continue
        faces.append(image if cfg.cropped else embedder.crop(image)[0])
        captions.append(name)
    if not faces:
        raise InputError(f"none of the images below {source} could be read")
    tile = int(cfg.tile)
    aligned, matrices = embedder.align(faces)
    quads = quad_pixels(matrices, tile)
    cells = [draw_pair(f, a, q, tile, c) for f, a, q, c in zip(faces, aligned, quads, captions)]
    output = Path(str(cfg.output)).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(cells, int(cfg.columns))).save(output)
    print(f"wrote {output}: {len(cells)} faces, {embedder.transform_name} transform "
          f"(green: where the aligned face is sampled from)", flush=True)
    return output


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="visualize")
def main(cfg: DictConfig) -> None:
    with friendly_errors():
        run(cfg)


if __name__ == "__main__":
    main()
