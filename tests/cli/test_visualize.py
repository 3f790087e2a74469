"""stn-face-visualize on real LFW photos: a PNG grid of the inputs and what the transformer made of them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import CLI_ENV, run_cli

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.mark.slow
def test_visualize_writes_a_grid_png(checkpoints, photos, tmp_path):
    output = tmp_path / "grid.png"
    result = run_cli(["stn_face.cli.visualize", f"ckpt={checkpoints['affine']}", f"input={photos / 'Aaron_Peirsol'}",
                      f"output={output}", "max_images=3", "columns=2", "tile=112"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    image = np.asarray(Image.open(output).convert("RGB"))
    # 2 rows x 2 cells of (input | aligned), each cell 2 tiles wide plus a caption strip
    assert image.shape[0] > 2 * 112 and image.shape[1] > 4 * 112
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert red.sum() > 200  # the sampling outlines are drawn, in the training picture's colour

