"""Reading images: RGB uint8 from any common file, one short reason for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stn_face.data.images import MEAN, STD, ImageReadError, decode_rgb, read_rgb


def test_grey_and_rgba_files_become_rgb_and_bytes_decode_alike(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 200, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 7, 4), 90, np.uint8)).save(tmp_path / "rgba.png")
    grey, rgba = read_rgb(tmp_path / "grey.png"), read_rgb(tmp_path / "rgba.png")
    assert grey.shape == rgba.shape == (5, 7, 3) and grey.dtype == np.uint8 and (grey == 200).all()
    data = (tmp_path / "rgba.png").read_bytes()
    assert np.array_equal(decode_rgb(data, "in memory"), rgba)


@pytest.mark.parametrize("content,reason", [(None, "file not found"), (b"", "empty file"), (b"not an image", None)])
def test_bad_files_name_themselves(tmp_path: Path, content, reason) -> None:
    path = tmp_path / "face.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as error:
        read_rgb(path)
    assert error.value.path == str(path) and error.value.reason


def test_the_normalisation_maps_pixels_to_minus_one_one() -> None:
    low = [(0.0 - m) / s for m, s in zip(MEAN, STD)]
    high = [(1.0 - m) / s for m, s in zip(MEAN, STD)]
    assert low == [-1.0] * 3 and high == [1.0] * 3
