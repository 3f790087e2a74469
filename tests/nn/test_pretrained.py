"""backbone.weights=PATH: files that do not fit give one line naming the file, what differs and the
option that fits; nothing in a file is executed; headers are checked before anything is allocated."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from stn_face.errors import InputError
from stn_face.nn import DlibResNet, IResNet
from stn_face.nn.pretrained import MissingWeightsError, PretrainedWeightsError, load_pretrained
from stn_face.nn.pretrained.dlib_dat import network_layout
from tests.nn.test_iresnet import DEPTHS, arcface_state_dict


@pytest.fixture(scope="module")
def dlib_file() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is not installed (pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("r18") / "backbone.pth"
    torch.save(arcface_state_dict(DEPTHS["iresnet18"]), path)
    return path


def _error(backbone, path) -> str:
    with pytest.raises(PretrainedWeightsError) as caught:
        load_pretrained(backbone, str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(caught.value, InputError)  # the CLI turns it into `error: ...` and exit 2
    return message


def test_another_depth_names_the_tensors_and_the_option(r18_file):
    message = _error(IResNet(layers=DEPTHS["iresnet50"], weights="x"), r18_file)
    assert "missing in the file" in message and "blocks." in message
    assert "it fits backbone=iresnet18" in message


def test_wrong_shapes_are_named(tmp_path):
    state = arcface_state_dict(DEPTHS["iresnet18"])
    state["fc.weight"] = state["fc.weight"][:256]
    state["fc.bias"] = state["fc.bias"][:256]
    path = tmp_path / "narrow.pth"
    torch.save(state, path)
    message = _error(IResNet(layers=DEPTHS["iresnet18"], weights="x"), path)
    assert "head.fc.weight (256, 25088) in the file vs (512, 25088) in the model" in message


def test_dlib_file_for_an_iresnet_says_dlib_resnet(dlib_file):
    message = _error(IResNet(layers=DEPTHS["iresnet18"], weights="x"), dlib_file)
    assert "use backbone=dlib_resnet" in message


def test_arcface_file_for_dlib_resnet_says_which_iresnet(r18_file):
    message = _error(DlibResNet(), r18_file)
    assert "not a dlib .dat network" in message and "use backbone=iresnet18" in message


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01])
def test_truncated_dlib_file(dlib_file, tmp_path, keep):
    data = dlib_file.read_bytes()
    path = tmp_path / "truncated.dat"
    path.write_bytes(data[:int(len(data) * keep)])
    message = _error(DlibResNet(), path)
    assert "truncated" in message or "left" in message


def test_a_header_claiming_gigabytes_fails_fast(dlib_file, tmp_path):
    """The first tensor's dimensions patched to 2^20 x 2^20 x 1 x 1 (4 TiB of floats): refused at once."""
    data = bytearray(dlib_file.read_bytes()[:4096])
    start = data.index(b"\x05con_4") + 6
    assert data[start:start + 2] == b"\x01\x02"  # tensor version 2, then four dimensions
    huge = b"\x03\x00\x00\x10"  # 2^20 as a dlib integer (3 bytes)
    dims_end = start + 2
    for _ in range(4):
        dims_end += 1 + (data[dims_end] & 0x0F)
    patched = bytes(data[:start + 2]) + huge + huge + b"\x01\x01" + b"\x01\x01" + bytes(data[dims_end:])
    path = tmp_path / "huge.dat"
    path.write_bytes(patched)
    began = time.perf_counter()
    message = _error(DlibResNet(), path)
    assert time.perf_counter() - began < 2.0
    assert "needs 4398046511104 bytes" in message


def test_another_dlib_architecture_is_refused(dlib_file):
    message = _error(DlibResNet(units=(3, 4, 3, 3, 2)), dlib_file)
    assert "not dlib's face recognition ResNet" in message
    assert len(network_layout((32,), (1,))) == 2 + 8 + 4


def _leave_mark(path: str) -> None:
    Path(path).write_text("ran")


class _Payload:
    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):  # unpickling this would call _leave_mark
        return (_leave_mark, (str(self.mark),))


def test_a_pickled_object_is_not_executed(tmp_path):
    mark = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(mark)}, path)
    message = _error(IResNet(layers=DEPTHS["iresnet18"], weights="x"), path)
    assert not mark.exists()
    assert "wants to import" in message and "_leave_mark" in message and "tensors only" in message
    assert "trust_checkpoint" not in message  # that option is for checkpoints, not for backbone.weights


def test_truncated_pth_file(r18_file, tmp_path):
    data = r18_file.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:len(data) // 2])
    began = time.perf_counter()
    message = _error(IResNet(layers=DEPTHS["iresnet18"], weights="x"), path)
    assert time.perf_counter() - began < 2.0 and "does not fit" in message


def test_text_file_and_missing_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "neither a PyTorch file nor a dlib network" in _error(DlibResNet(), text)
    with pytest.raises(MissingWeightsError, match="no such file"):
        load_pretrained(DlibResNet(), str(tmp_path / "absent.dat"))
    with pytest.raises(MissingWeightsError, match="not installed"):
        load_pretrained(DlibResNet(), "package:no_such_package_here/model.dat")


def test_a_backbone_without_pretrained_weights_says_so(r18_file):
    from stn_face.nn import PaperResNet

    with pytest.raises(PretrainedWeightsError, match="takes no pretrained weights"):
        load_pretrained(PaperResNet(widths=(8, 8, 8, 8), units=(1, 1, 1, 1)), str(r18_file))


def test_a_dlib_network_of_another_kind(tmp_path):
    path = tmp_path / "mmod_human_face_detector.dat"
    path.write_bytes(b"\x01\x01\x01\x0aloss_mmod_" + b"\x01\x02" * 40)
    message = _error(DlibResNet(), path)
    assert "ends in 'loss_mmod_'" in message
    # for an IResNet it is a dlib file, but not one that backbone=dlib_resnet reads
    message = _error(IResNet(layers=DEPTHS["iresnet18"], weights="x"), path)
    assert "another output layer" in message and "backbone=dlib_resnet" not in message
