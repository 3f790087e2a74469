"""Pictures of what the spatial transformer does to a face, drawn with OpenCV on uint8 RGB arrays.

Used by ``stn-face-visualize``: each cell is an input face (the crop the network gets) with the
outline the transformer samples (green, its top-left corner red; for tps the warped grid too), the
aligned face beside it, and a caption strip.
"""

from __future__ import annotations

import numpy as np

CAPTION = 18


def quad_pixels(points, tile: int) -> np.ndarray:
    """Normalised input points ``(..., 2)`` (the outlines or grid lines of
    :func:`stn_face.evaluation.alignment.sampled_outline`) in pixel coordinates of an input drawn ``tile``
    pixels wide (``align_corners=False``: ``u = ((x + 1) * tile - 1) / 2``)."""
    import torch

    from stn_face.geometry import to_pixel_points

    return to_pixel_points(torch.as_tensor(points, dtype=torch.float64), tile, tile).numpy()


def draw_pair(face: np.ndarray, aligned: np.ndarray, quad: np.ndarray, tile: int, caption: str,
              lines: np.ndarray | None = None) -> np.ndarray:
    """One cell ``(tile + CAPTION, 2 tile + 4, 3)``: the input with its sampled outline ``(M, 2)`` (and
    warped grid ``lines (L, P, 2)``, pixels) | the aligned face, over a caption strip."""
    import cv2

    left = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_LINEAR if face.shape[0] < tile else cv2.INTER_AREA)
    right = cv2.resize(aligned, (tile, tile), interpolation=cv2.INTER_LINEAR)
    left = np.ascontiguousarray(left)
    thickness = max(1, tile // 112)
    points = np.round(quad * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(left, [points.reshape(-1, 1, 2)], isClosed=True, color=(0, 255, 0), thickness=thickness,
                  lineType=cv2.LINE_AA, shift=4)
    for line in () if lines is None else lines:
        cv2.polylines(left, [np.round(line * 16).astype(np.int32).reshape(-1, 1, 2)], isClosed=False,
                      color=(0, 255, 0), thickness=1, lineType=cv2.LINE_AA, shift=4)
    cv2.circle(left, tuple(int(v) for v in points[0]), 3 * thickness * 16, (255, 0, 0), -1, cv2.LINE_AA, shift=4)
    cell = np.full((tile + CAPTION, 2 * tile + 4, 3), 255, np.uint8)
    cell[:tile, :tile] = left
    cell[:tile, tile + 4:] = right
    text = caption if len(caption) <= 2 * tile // 7 else "..." + caption[-(2 * tile // 7 - 3):]
    cv2.putText(cell, text, (2, tile + CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return cell


def grid(cells: list[np.ndarray], columns: int, gap: int = 8) -> np.ndarray:
    """Equal-sized cells laid out ``columns`` per row on a white canvas."""
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    height, width = cells[0].shape[:2]
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, cell in enumerate(cells):
        r, c = divmod(index, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        canvas[y:y + height, x:x + width] = cell
    return canvas
