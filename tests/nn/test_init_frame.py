"""The transformer's start view: the aligned size follows the backbone, and ``init_frame`` starts every family
at a measured similarity (the framing a pretrained embedder expects) instead of a centred zoom."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.geometry import get_transform, grid_from_matrix, similarity_matrix, square_outline, warp
from stn_face.nn import LocalizationNet, SpatialTransformer
from stn_face.nn.transformer import frame_matrix, start_matrix

FRAMING = Path(__file__).resolve().parents[2] / "experiments" / "pretrained_alignment" / "framing_dlib.json"
FRAME = {"scale": 0.5, "rotation": 0.1, "tx": 0.05, "ty": 0.12}


def _localization(**kw):
    return LocalizationNet(conv_channels=(4,), fc_dims=(8,), input_size=16, **kw)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# ---------------------------------------------------------------------- the output size follows the backbone
@pytest.mark.parametrize("backbone,size", [("dlib_resnet", 150), ("small", 112), ("tiny", 112),
                                           ("paper_resnet", 112), ("iresnet50", 112)])
@pytest.mark.parametrize("transform", ["projective", "identity"])
def test_output_size_is_the_backbones_input_size(backbone, size, transform):
    cfg = _compose([f"backbone={backbone}", f"transform={transform}"])
    assert list(cfg.transform.output_size) == [size, size] == [cfg.backbone.input_size] * 2
    assert instantiate(cfg.transform).output_size == (size, size)


def test_output_size_can_still_be_set():
    cfg = _compose(["backbone=small", "transform.output_size=[96,96]"])
    assert instantiate(cfg.transform).output_size == (96, 96)


# ------------------------------------------------------------------------------------- the pure geometry
def test_similarity_matrix_is_the_similarity_familys():
    params = torch.tensor([[FRAME["scale"], FRAME["rotation"], FRAME["tx"], FRAME["ty"]]])
    torch.testing.assert_close(similarity_matrix(**FRAME), get_transform("similarity").matrix(params)[0])


def test_frame_square_corners_from_the_numbers():
    """The sampled square: centre (tx, ty), half-side scale, turned by rotation (worked out by hand)."""
    s, r, tx, ty = FRAME["scale"], FRAME["rotation"], FRAME["tx"], FRAME["ty"]
    c, n = math.cos(r), math.sin(r)
    # output corner (x, y) -> (tx + s (x c - y n), ty + s (x n + y c)); top-left, top-right, bottom-right, bottom-left
    expected = torch.tensor([[tx + s * (-c + n), ty + s * (-n - c)], [tx + s * (c + n), ty + s * (n - c)],
                             [tx + s * (c - n), ty + s * (n + c)], [tx + s * (-c - n), ty + s * (-n + c)]])
    stn = SpatialTransformer("similarity", _localization, output_size=(150, 150), input_size=216, init_frame=FRAME)
    _, matrix = stn(torch.zeros(1, 3, 216, 216))
    torch.testing.assert_close(stn.map_points(matrix, square_outline())[0], expected, atol=1e-6, rtol=0)
    assert stn.init_scale == FRAME["scale"]


@pytest.mark.parametrize("family", ["similarity", "affine", "projective", "tps"])
def test_params_from_matrix_give_the_matrixs_map(family):
    fam = get_transform(family)
    matrix = similarity_matrix(**FRAME)
    params = fam.params_from_matrix(matrix).unsqueeze(0)
    assert params.shape == (1, fam.num_params)
    torch.testing.assert_close(fam.sampling_grid(params, (20, 24)), grid_from_matrix(matrix[None], (20, 24)),
                               atol=1e-5, rtol=0)


def test_a_family_refuses_a_start_it_cannot_express():
    sheared = torch.tensor([[0.5, 0.2, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="similarity transform cannot start from the matrix"):
        get_transform("similarity").params_from_matrix(sheared)
    with pytest.raises(ValueError, match="identity transform cannot start from the matrix"):
        get_transform("identity").params_from_matrix(similarity_matrix(**FRAME))


# ------------------------------------------------------------------------------ the transformer's start view
@pytest.mark.parametrize("family", ["identity", "similarity", "affine", "projective", "tps"])
def test_step_zero_output_samples_the_frame(family):
    """At step 0 every family's aligned face is the frame's square sampled from the wide crop."""
    torch.manual_seed(0)
    crops = torch.rand(2, 3, 216, 216) * 2 - 1
    stn = SpatialTransformer(family, None if family == "identity" else _localization, output_size=(150, 150),
                             input_size=216, init_frame=FRAME)
    with torch.no_grad():
        aligned, _ = stn(crops)
    expected = warp(crops, similarity_matrix(**FRAME).expand(2, 3, 3), (150, 150))
    assert aligned.shape == (2, 3, 150, 150)
    torch.testing.assert_close(aligned, expected, atol=2e-4 if family == "tps" else 1e-5, rtol=0)


def test_without_a_frame_the_start_is_the_centred_zoom():
    torch.testing.assert_close(start_matrix((112, 112), 128), torch.diag(torch.tensor([0.875, 0.875, 1.0])))
    stn = SpatialTransformer("affine", _localization, input_size=128)
    torch.testing.assert_close(stn.localization.head.bias, get_transform("affine").init_params(0.875))


@pytest.mark.parametrize("frame,message", [
    ({"scale": 0.5, "shift": 1}, r"init_frame has unknown key\(s\) \['shift'\]; it takes scale, rotation, tx, ty"),
    ({"tx": 0.1}, r"init_frame needs a scale"),
    ({"scale": -0.5}, r"init_frame.scale=-0.5 must be positive"),
    ({"scale": "wide"}, r"init_frame.scale='wide' must be a number"),
    ({"scale": float("nan")}, r"init_frame.scale=nan must be a finite number"),
    ([0.5, 0, 0, 0], r"init_frame must be a mapping of scale, rotation, tx, ty"),
])
def test_bad_frames_are_named(frame, message):
    with pytest.raises(ValueError, match=message):
        frame_matrix(frame)


def test_a_bad_frame_in_the_config_is_one_error_line(capsys):
    from stn_face.errors import friendly_errors

    cfg = _compose(["transform.init_frame={scale: 0.5, shift: 1}"])
    with pytest.raises(SystemExit) as exit_, friendly_errors():
        instantiate(cfg.transform)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: transform.init_frame has unknown key(s) ['shift']; it takes scale, rotation, tx, ty (rotation in "
        "radians)"]


def test_scale_and_frame_together_are_refused():
    with pytest.raises(ValueError, match=r"set transform.init_scale \(0.8\) or transform.init_frame, not both"):
        SpatialTransformer("affine", _localization, init_scale=0.8, init_frame=FRAME)


# ------------------------------------------------------------------------------ the study's preset
def test_pretrained_dlib_preset_starts_from_the_measured_framing():
    chosen = json.loads(FRAMING.read_text())["chosen"]
    cfg = _compose(["experiment=pretrained_dlib"])
    assert cfg.backbone._target_ == "stn_face.nn.DlibResNet" and cfg.model.freeze_backbone is True
    assert cfg.data.crop.margin == chosen["margin"] and cfg.data.crop.size == chosen["size"]
    assert cfg.data.image_size == chosen["size"] and cfg.eval.name == "lfw"
    assert {k: cfg.transform.init_frame[k] for k in chosen["init_frame"]} == chosen["init_frame"]
    stn = instantiate(cfg.transform)
    assert stn.output_size == (150, 150) and stn.input_size == (chosen["size"],) * 2
    assert stn.init_scale == chosen["init_frame"]["scale"]
    # crops of other settings live in folders of their own: the 128 px / 1.3x caches are never remade
    default = _compose(["data=celeba_subset", "eval=lfw"])
    assert cfg.data.root != default.data.root and cfg.eval.prepared_root != default.eval.prepared_root
    for folder in (cfg.data.root, cfg.eval.prepared_root):
        assert f"crop{chosen['size']}" in folder and f"m{chosen['margin']}" in folder


def test_backbone_dlib_resnet_alone_builds_a_working_model(monkeypatch, tmp_path):
    """No transform.output_size by hand: the model's transformer feeds dlib's network its 150x150 input."""
    pytest.importorskip("dlib")  # only for the dev extra's face-recognition-models, which holds the weights
    from tests.helpers import compose_train

    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    cfg = compose_train(["backbone=dlib_resnet", "transform=similarity", "localization=conv1_fc1"], tmp_path)
    model = instantiate(cfg.model, num_classes=3).eval()
    with torch.no_grad():
        embeddings, aligned, _ = model.embed(torch.zeros(2, 3, cfg.data.image_size, cfg.data.image_size))
    assert aligned.shape == (2, 3, 150, 150) and embeddings.shape == (2, 128)
