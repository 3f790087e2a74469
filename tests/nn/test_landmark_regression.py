"""Landmark regression (the paper's Table 2 experiment): the model wrapper and a short real training."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.data.images import read_rgb
from stn_face.data.prepare import parse_numbers, read_manifest, square_crop
from stn_face.data.prepare.crop import points_in_face_crop
from stn_face.paths import REPO_ROOT, cache_dir

SCRIPT = REPO_ROOT / "experiments" / "paper_table2" / "regress.py"
# 16 CelebA identities (~330 photos): 12 train, 4 held out
IDENTITIES = 16


def _script():
    spec = importlib.util.spec_from_file_location("paper_table2_regress", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit_module():
    """The experiment's own coordinates, loss and fit loop (experiments/paper_table2/landmark_fit.py)."""
    spec = importlib.util.spec_from_file_location("landmark_fit", SCRIPT.parent / "landmark_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fit = _fit_module()
GRID_MSE_PER_UNIT_MSE, landmark_mse, mse_in = _fit.GRID_MSE_PER_UNIT_MSE, _fit.landmark_mse, _fit.mse_in
pixels_to_unit, predict, unit_to = _fit.pixels_to_unit, _fit.predict, _fit.unit_to


def _config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="landmark_regression", overrides=overrides)


def test_regressor_starts_at_the_mean_shape_and_sees_what_the_transformer_sees():
    cfg = _config(["localization=conv2_fc1"])
    mean_shape = torch.rand(5, 2) * 2 - 1
    torch.manual_seed(0)
    model = instantiate(cfg.regression.model)(localization=instantiate(cfg.localization), init_landmarks=mean_shape)
    images = torch.randn(6, 3, 128, 128)
    out = predict(model, images, batch_size=4)
    assert out.shape == (6, 5, 2)
    torch.testing.assert_close(out, mean_shape.expand(6, 5, 2))
    model.net.head.weight.data.normal_(0, 1e-3)  # leave the mean shape, so the image matters
    # resizing a data set once gives what resizing every batch gives, and what the localization net
    # does with a 128 crop inside the spatial transformer (antialiased, to 64)
    assert model.resize(images).shape == (6, 3, 64, 64)
    once = predict(model, model.resize(images), 4)
    torch.testing.assert_close(predict(model, images, 4), once)
    torch.testing.assert_close(model.net.eval()(images).reshape(6, 5, 2), once)
    smooth = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(model.resize(images), smooth, atol=1e-5, rtol=0)


def test_coordinates_and_mse_units():
    pixels = torch.tensor([[-0.5, -0.5], [127.5, 63.5]])
    unit = pixels_to_unit(pixels, 128)
    torch.testing.assert_close(unit, torch.tensor([[0.0, 0.0], [1.0, 0.5]]))
    torch.testing.assert_close(unit_to(unit, "grid"), torch.tensor([[-1.0, -1.0], [1.0, 0.0]]))
    a, b = torch.rand(7, 5, 2), torch.rand(7, 5, 2)
    ratio = landmark_mse(unit_to(a, "grid"), unit_to(b, "grid")) / landmark_mse(a, b)
    assert float(ratio) == pytest.approx(GRID_MSE_PER_UNIT_MSE, rel=1e-5)
    assert mse_in(0.001, "unit", "grid") == pytest.approx(0.004)
    with pytest.raises(ValueError, match="coordinates"):
        unit_to(a, "pixels")


@pytest.fixture(scope="module")
def small_celeba(celeba_dir):
    """The CelebA-subset config restricted to IDENTITIES identities, prepared into its own cache folder."""
    names = sorted(p.name for p in celeba_dir.iterdir() if p.is_dir())[:IDENTITIES]
    root = cache_dir() / "prepared" / f"celeba-subset-crop128-first{IDENTITIES}"
    # quoted: CelebA identities are numbers with leading zeros (07201), which Hydra would read as ints
    return [f"+data.identities=[{','.join(repr(n) for n in names)}]", f"data.root={root}"]


@pytest.mark.data
def test_landmarks_follow_the_crop(small_celeba, celeba_dir):
    """A dot drawn at a detected landmark of a real photo lands, in the crop the preparation's
    square_crop cuts, where points_in_face_crop says (to a fraction of a crop pixel)."""
    cfg = _config(small_celeba)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    rows = [r for r in read_manifest(datamodule.root) if r["status"] == "detected"][:5]
    size, margin = int(cfg.data.crop.size), float(cfg.data.crop.margin)
    for row in rows:
        photo = read_rgb(celeba_dir / row["source"]).copy()
        box = np.array(parse_numbers(row["box"]))
        nose = np.array(parse_numbers(row["landmarks"])).reshape(5, 2)[2]
        x, y = np.round(nose).astype(int)
        photo[:] = 0
        photo[y - 1:y + 2, x - 1:x + 2] = 255  # a 3x3 dot centred on pixel (x, y)
        crop = square_crop(photo, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
                           margin * max(box[2] - box[0], box[3] - box[1]), size).astype(float)[..., 0]
        ys, xs = np.mgrid[:size, :size]
        found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        expected = points_in_face_crop(box, np.array([[x, y]], dtype=float), margin)[0] * size - 0.5
        assert np.abs(found - expected).max() < 0.35, (row["source"], found, expected)


@pytest.mark.data
@pytest.mark.slow
def test_a_short_training_beats_the_mean_shape(small_celeba, tmp_path):
    """40 steps of the real regression on 222 crops of 12 identities: the held-out MSE (97 crops of 4
    other identities) falls below predicting the training mean shape. Measured (AMD EPYC, 2 cores,
    AVX2, PyTorch-MTCNN crops): baseline 0.00523, 0.00490 after 20 steps, 0.00308 after 40 (grid
    coordinates); 24 s of training on the busy CPU."""
    out = tmp_path / "result.json"
    cfg = _config([*small_celeba, "localization=conv3_fc1", "regression.held_out_fraction=0.25",
                   "regression.steps=40", "regression.batch_size=32", "regression.eval_every=20",
                   f"regression.results_file={out}"])
    results = _script().run(cfg)
    assert json.loads(out.read_text()) == results
    data = results["data"]
    assert data["identities"] == IDENTITIES and data["held_out_identities"] == IDENTITIES // 4
    assert data["train_images"] > 200 and data["held_out_images"] > 50
    baseline, final = results["mean_shape_baseline_mse"]["grid"], results["held_out_mse"]["grid"]
    assert 0.003 < baseline < 0.02, baseline  # the landmarks vary (full subset, held-out: 0.0103)
    assert final < 0.8 * baseline, (final, baseline)
    assert results["held_out_mse"]["unit"] == pytest.approx(final / 4)
    assert results["steps"] == 40 and results["seed"] == 42
    assert results["machine"]["logical_cpus"] >= 1 and results["train_time_s"] > 0
