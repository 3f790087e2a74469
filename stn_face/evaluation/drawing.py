"""The one picture of what the spatial transformer does to faces, drawn with OpenCV on uint8 RGB arrays.

:func:`draw_alignment` makes it for the training callback (``alignment/stepNNNNNN.png``) and for
``stn-face-visualize`` alike: a title, column headers over every pair ("input + sampled area" |
"aligned face"), each input face (the crop the network gets) with the outline of where the transformer
samples (red, its top-left corner a yellow dot; for ``tps`` the warped grid lines too, thin red), the
aligned face the backbone sees beside it, an optional caption under each pair, and the key inside the
image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RED, YELLOW, BLACK, WHITE = (230, 0, 0), (255, 220, 0), (0, 0, 0), (255, 255, 255)
TEXT_ROW = 18  # pixels of a text row (headers, captions, key)
GAP = 8
KEY = "red: where the aligned face is sampled from; yellow dot: its top-left corner"
KEY_GRID = "; thin red: the warped sampling grid"


def to_pixels(points, tile: int) -> np.ndarray:
    """Normalised input points ``(..., 2)`` (the outlines or grid lines of
    :func:`stn_face.evaluation.alignment.sampled_outline`) in pixel coordinates of an input drawn ``tile``
    pixels wide (``align_corners=False``: ``u = ((x + 1) * tile - 1) / 2``)."""
    import torch

    from stn_face.geometry import to_pixel_points

    return to_pixel_points(torch.as_tensor(points, dtype=torch.float64), tile, tile).numpy()


def _text(canvas: np.ndarray, text: str, x: int, y: int, width: int, scale: float = 0.4) -> None:
    """``text`` left-aligned at ``(x, baseline y)``, cut from the left to fit ``width`` pixels."""
    import cv2

    fits = max(4, int(width / (17 * scale)))  # Hershey simplex: about 17 pixels a character at scale 1
    text = text if len(text) <= fits else "..." + text[-(fits - 3):]
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, 1, cv2.LINE_AA)


def _pair(face: np.ndarray, aligned: np.ndarray, outline: np.ndarray, lines: np.ndarray | None,
          tile: int) -> np.ndarray:
    """``(tile, 2 tile + 4, 3)``: the input with its outline ``(M, 2)`` and grid ``lines (L, P, 2)`` (pixels)
    | the aligned face."""
    import cv2

    left = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_LINEAR if face.shape[0] < tile else cv2.INTER_AREA)
    left = np.ascontiguousarray(left)
    right = cv2.resize(aligned, (tile, tile), interpolation=cv2.INTER_LINEAR)
    thickness = max(1, tile // 112)
    points = np.round(outline * 16).astype(np.int32)  # 4 fractional bits
    for line in () if lines is None else lines:
        cv2.polylines(left, [np.round(line * 16).astype(np.int32).reshape(-1, 1, 2)], isClosed=False, color=RED,
                      thickness=1, lineType=cv2.LINE_AA, shift=4)
    cv2.polylines(left, [points.reshape(-1, 1, 2)], isClosed=True, color=RED, thickness=thickness,
                  lineType=cv2.LINE_AA, shift=4)
    cv2.circle(left, tuple(int(v) for v in points[0]), 3 * thickness * 16, YELLOW, -1, cv2.LINE_AA, shift=4)
    pair = np.full((tile, 2 * tile + 4, 3), 255, np.uint8)
    pair[:, :tile], pair[:, tile + 4:] = left, right
    return pair


def draw_alignment(faces: Sequence[np.ndarray], aligned: Sequence[np.ndarray], outlines: np.ndarray,
                   lines: np.ndarray | None = None, title: str = "", captions: Sequence[str] | None = None,
                   columns: int = 4, tile: int = 128) -> np.ndarray:
    """The alignment picture, uint8 RGB.

    ``faces``: input crops ``(H, W, 3)``; ``aligned``: the transformer's outputs ``(h, w, 3)``;
    ``outlines``: ``(N, M, 2)`` sampled outlines and ``lines``: ``(N, L, P, 2)`` grid lines or None, both in
    pixels of an input drawn ``tile`` wide (:func:`to_pixels`); ``columns``: pairs per row.
    """
    import cv2

    count = len(faces)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    cell_w, cell_h = 2 * tile + 4, TEXT_ROW + tile + (TEXT_ROW if captions else 0)
    width = max(columns * (cell_w + GAP) + GAP, 420)
    top = (TEXT_ROW + 6) if title else 4
    height = top + rows * (cell_h + GAP) + 2 * TEXT_ROW
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        _text(canvas, title, GAP, TEXT_ROW, width - 2 * GAP, scale=0.5)
    for index in range(count):
        r, c = divmod(index, columns)
        x, y = GAP + c * (cell_w + GAP), top + r * (cell_h + GAP)
        _text(canvas, "input + sampled area", x, y + TEXT_ROW - 5, tile, scale=0.35)
        _text(canvas, "aligned face", x + tile + 4, y + TEXT_ROW - 5, tile, scale=0.35)
        canvas[y + TEXT_ROW:y + TEXT_ROW + tile, x:x + cell_w] = _pair(
            faces[index], aligned[index], outlines[index], None if lines is None else lines[index], tile)
        if captions:
            _text(canvas, captions[index], x, y + TEXT_ROW + tile + TEXT_ROW - 5, cell_w)
    key_y = height - TEXT_ROW + 2
    cv2.line(canvas, (GAP, key_y - 4), (GAP + 16, key_y - 4), RED, 2, cv2.LINE_AA)
    cv2.circle(canvas, (GAP + 22, key_y - 4), 3, YELLOW, -1, cv2.LINE_AA)
    _text(canvas, KEY + (KEY_GRID if lines is not None else ""), GAP + 30, key_y, width - GAP - 30)
    return canvas
