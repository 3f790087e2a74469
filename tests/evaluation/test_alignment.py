"""Alignment pictures and the collapse monitor, on real LFW crops."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from stn_face.data.datamodule import FaceDataModule
from stn_face.evaluation.alignment import (
    AlignmentGridCallback,
    TransformCollapseMonitor,
    corners_to_pixels,
    draw_alignment_grid,
    sampled_outline,
)
from stn_face.geometry import corners, square_outline, tps_control_points, transform_points, warp
from stn_face.nn import LocalizationNet, SpatialTransformer
from tests.helpers import LFW_TRAIN_PEOPLE, compose_train, prepare_small_lfw


def test_corner_pixels_follow_align_corners_false():
    zoom = torch.diag(torch.tensor([0.875, 0.875, 1.0])).unsqueeze(0)
    pts = corners_to_pixels(corners(zoom), 128, 128)[0]
    # the centre 112 of a 128 crop: pixel edges 8 and 120, i.e. -0.5 from the pixel centres
    np.testing.assert_allclose(pts, [[7.5, 7.5], [119.5, 7.5], [119.5, 119.5], [7.5, 119.5]], atol=1e-9)
    pts = corners_to_pixels(corners(torch.eye(3).unsqueeze(0)), 100, 60)[0]
    np.testing.assert_allclose(pts[2], [59.5, 99.5], atol=1e-9)


def test_quadrilateral_marks_where_the_output_comes_from():
    # a bright dot inside the drawn quadrilateral's top-left corner lands in the aligned top-left pixel
    image = torch.zeros(1, 1, 128, 128)
    theta = torch.tensor([[[0.5, 0.0, 0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]]])
    (u, v) = corners_to_pixels(corners(theta), 128, 128)[0, 0]
    image[0, 0, int(v) + 1, int(u) + 1] = 1.0  # the first input pixel inside the quadrilateral
    out = warp(image, theta, (64, 64))
    assert (u, v) == (47.5, 15.5)  # the output pixel 0 centre samples input pixel (48, 16)
    assert float(out[0, 0, 0, 0]) == 1.0 and float(out.sum()) == 1.0


def test_collapse_monitor_counts_events_once():
    monitor = TransformCollapseMonitor(min_scale=0.3, min_output_std=0.05)
    started = [monitor.check(s, 0.5, i) for i, s in enumerate([0.8, 0.25, 0.2, 0.7, 0.1, 0.1])]
    assert started == [False, True, False, False, True, False] and monitor.warnings == 2
    assert not monitor.check(0.9, 0.5, 6) and not monitor.collapsed  # healthy again
    assert monitor.check(0.9, 0.01, 7) and monitor.warnings == 3  # blank output
    assert not monitor.check(0.9, 0.5, 8, perspective=0.02) and not monitor.collapsed
    # the folded homography of the failed lr-0.1 run (experiments/cpu_celeba): scale 0.51, perspective 1.57
    assert monitor.check(0.51, 0.38, 9, perspective=1.57) and monitor.warnings == 4


def _size_and_red(path):
    """(width, height, mask of red pixels) of a PNG."""
    with Image.open(path) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("RGB")).astype(int)
    return width, height, (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)


def test_tps_outline_and_grid_follow_the_warp():
    stn = SpatialTransformer("tps", lambda **kw: LocalizationNet(conv_channels=(8,), **kw), input_size=128)
    affine = torch.tensor([[[0.7, -0.2, 0.1], [0.2, 0.7, -0.1], [0.0, 0.0, 1.0]]])
    params = transform_points(affine, tps_control_points(4, torch.float32)).reshape(1, -1)
    outline, lines = sampled_outline(stn, params, lines=4, points_per_side=8)
    # an affine set of control points: the outline is the affine image of the square's boundary
    torch.testing.assert_close(outline, transform_points(affine, square_outline(8)), atol=1e-5, rtol=0)
    assert lines.shape == (1, 8, 32, 2)
    # the grid lines through the control points pass through where the control points land
    torch.testing.assert_close(lines[0, :4, ::31].reshape(-1, 2), params.reshape(-1, 2)[[0, 3, 4, 7, 8, 11, 12, 15]],
                               atol=1e-5, rtol=0)
    quad, none = sampled_outline(SpatialTransformer("affine", lambda **kw: LocalizationNet(conv_channels=(8,), **kw)),
                                 affine)
    assert none is None and quad.shape == (1, 4, 2)


@pytest.fixture(scope="module")
def small_lfw(lfw_dir):
    return prepare_small_lfw(lfw_dir)


@pytest.mark.parametrize("transform,init_scale", [("projective", 0.2), ("identity", 0.875), ("tps", 0.875)])
def test_grid_and_monitor_in_training(transform, init_scale, small_lfw, tmp_path, caplog):
    cfg = compose_train([f"transform={transform}", f"transform.init_scale={init_scale}", "backbone=tiny",
                         "head=arcface_small", "model.margin_warmup_steps=0"], tmp_path)
    L.seed_everything(0)
    datamodule = FaceDataModule(root=str(small_lfw), identities=LFW_TRAIN_PEOPLE[:4], batch_size=12,
                                num_workers=0, max_images_per_identity=6, augment={"hflip": 0.0})
    datamodule.setup("fit")
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    grid = AlignmentGridCallback(every_n_steps=2, num_images=6, output_dir=str(tmp_path), source="train")
    monitor = TransformCollapseMonitor(min_scale=0.3)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[grid, monitor], default_root_dir=tmp_path,
                        num_sanity_val_steps=0, enable_model_summary=False, log_every_n_steps=1,
                        limit_val_batches=0)
    with caplog.at_level("WARNING"):
        trainer.fit(model, datamodule=datamodule)
    names = sorted(p.name for p in (tmp_path / "alignment").glob("*.png"))
    assert names == ["step000002.png", "step000003.png"]
    width, height, red = _size_and_red(tmp_path / "alignment" / "step000003.png")
    assert width > 2 * height > 200  # 4 pairs per row, 2 rows
    assert red.sum() > 100  # the quadrilaterals are drawn
    if transform == "projective":  # the transformer starts zoomed onto 20 % of the crop: one event
        assert monitor.warnings == 1 and "collapsing" in caplog.text
        assert float(trainer.callback_metrics["transform/collapse_warnings"]) == 1.0
    elif transform == "tps":  # no matrix statistics; its output is watched, and is healthy
        assert "transform/scale" not in trainer.callback_metrics
        assert float(trainer.callback_metrics["transform/output_std"]) > 0.05
        assert monitor.warnings == 0 and float(trainer.callback_metrics["transform/collapse_warnings"]) == 0.0
        with torch.no_grad():
            aligned, transform = model.transformer.eval()(grid.images)
        outline, _ = sampled_outline(model.transformer, transform)
        *_, outline_only = _size_and_red(draw_alignment_grid(grid.images, aligned, outline, tmp_path / "bare.png"))
        assert red.sum() > 1.5 * outline_only.sum()  # and the warped grid lines inside
    else:  # no localization net: nothing checked
        assert monitor.warnings == 0 and "transform/collapse_warnings" not in trainer.callback_metrics
