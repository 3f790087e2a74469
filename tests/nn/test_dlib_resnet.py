"""dlib's face recognition ResNet in PyTorch (backbone=dlib_resnet) against dlib itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.nn import DlibResNet
from stn_face.nn.dlib_resnet import padded_add
from stn_face.nn.pretrained import load_pretrained, resolve_weights_path


def _models_dir() -> Path:
    # the package's __init__ needs pkg_resources: find its folder without importing it
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is not installed (pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@pytest.fixture(scope="module")
def dlib_weights() -> Path:
    return _models_dir() / "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def port(dlib_weights) -> DlibResNet:
    return load_pretrained(DlibResNet(weights=str(dlib_weights))).eval()


def _to_data_normalisation(chips: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> the data pipeline's tensors, (x / 255 - mean) / std."""
    from stn_face.data.augment import MEAN, STD

    x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_config_normalisation_is_the_data_pipelines():
    from stn_face.data.augment import MEAN, STD

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone=dlib_resnet"])
    assert tuple(cfg.backbone.data_mean) == tuple(MEAN) and tuple(cfg.backbone.data_std) == tuple(STD)
    assert cfg.backbone.input_size == 150 and cfg.backbone.embedding_size == 128


def test_default_weights_are_the_installed_packages(dlib_weights):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone=dlib_resnet"])
    assert resolve_weights_path(cfg.backbone.weights) == dlib_weights
    net = load_pretrained(instantiate(cfg.backbone))
    # the means dlib stores in its input layer (input_rgb_image_sized)
    torch.testing.assert_close(net.pixel_mean, torch.tensor([122.782, 117.001, 104.298]), atol=1e-3, rtol=0)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 29
    assert net(torch.zeros(2, 3, 150, 150)).shape == (2, 128)


def test_another_input_size_is_refused():
    with pytest.raises(ValueError, match=r"150x150 chips, got 112x112: drop the transform.output_size override .* set transform.output_size=\[150,150\]"):
        DlibResNet()(torch.zeros(1, 3, 112, 112))


def test_padded_add_is_dlibs_add_of_different_sizes():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = padded_add(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all() and out[0, 0, 3, :].eq(10).all() and out[0, 0, :, 3].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()


@pytest.mark.data
def test_port_equals_dlib_on_lfw_chips(lfw_dir, port, dlib_weights):
    """On dlib's own 150x150 chips of real LFW photos (its detector, 5-point shape predictor and
    get_face_chip), the port's descriptors equal face_recognition_model_v1's to 1e-4."""
    dlib = pytest.importorskip("dlib")
    from stn_face.data.images import read_rgb

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_weights.parent / "shape_predictor_5_face_landmarks.dat"))
    recogniser = dlib.face_recognition_model_v1(str(dlib_weights))
    chips = []
    people = sorted(p for p in (lfw_dir / "lfw-deepfunneled").iterdir() if p.is_dir())
    for person in people[::400]:  # 15 people across the alphabet
        image = read_rgb(sorted(person.glob("*.jpg"))[0])
        faces = detector(image, 1)
        if faces:
            chips.append(dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=0.25))
    assert len(chips) >= 10
    expected = np.stack([np.asarray(recogniser.compute_face_descriptor(chip)) for chip in chips])
    with torch.no_grad():
        got = port(_to_data_normalisation(np.stack(chips))).numpy()
    assert np.abs(got - expected).max() < 1e-4
    # and they are descriptors, not zeros: dlib's are about unit length
    assert np.linalg.norm(expected, axis=1).min() > 0.5
