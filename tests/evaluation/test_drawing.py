"""The alignment picture: one input + aligned pair per face, the sampled outline drawn in red."""

from __future__ import annotations

import numpy as np

from stn_face.evaluation.drawing import draw_alignment, to_pixels


def test_to_pixels_uses_align_corners_false() -> None:
    points = to_pixels(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), 128)
    assert np.allclose(points, [[-0.5, -0.5], [127.5, 127.5], [63.5, 63.5]])


def test_picture_holds_every_pair_and_the_outline() -> None:
    faces = [np.full((32, 32, 3), 120, np.uint8) for _ in range(3)]
    aligned = [np.full((28, 28, 3), 60, np.uint8) for _ in range(3)]
    square = to_pixels(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 32)
    outlines = np.stack([square] * 3)
    picture = draw_alignment(faces, aligned, outlines, title="step 10", captions=["a", "b", "c"], columns=2,
                             tile=32)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1] >= 420
    red = (picture[..., 0] > 200) & (picture[..., 1] < 80) & (picture[..., 2] < 80)
    assert red.sum() > 50  # the outlines (and the key's sample line)
