"""Fixtures of the data tests: real CelebA-subset crops and their .rec pack (tests/packed_helpers.py), and
small identity folders of written images (``write_faces``)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.packed_helpers import celeba_crops, celeba_pack  # noqa: F401 - fixtures


@pytest.fixture
def write_faces():
    """``write_faces(root, {"alice": 3, ...}, size=24)``: ``root/<identity>/NN.jpg`` of random pixels; returns root."""

    def write(root: Path, counts: dict[str, int], size: int = 24) -> Path:
        rng = np.random.default_rng(0)
        for name, count in counts.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i:02d}.jpg")
        return root

    return write
