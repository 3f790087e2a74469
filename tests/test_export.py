"""ONNX and TorchScript exports of the whole embedder give PyTorch's embeddings on real LFW crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stn_face.embedder import FaceEmbedder
from stn_face.export import ExportedEmbedder, export, run_exported
from tests.helpers import (
    CLI_ENV,
    FAMILIES,
    _build_one,
    compose_cli,
    expect_input_error,
    prepare_small_lfw,
    real_crops,
    run_cli,
)

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]

EXPORT_BATCH, RUN_BATCH = 2, 5


@pytest.fixture(scope="module")
def batch(view2_crops, checkpoints) -> torch.Tensor:
    root, names = view2_crops
    embedder = FaceEmbedder.from_checkpoint(checkpoints["identity"])
    return embedder.preprocess(real_crops(names, root, RUN_BATCH))


@pytest.fixture(scope="module")
def with_tps(checkpoints, lfw_dir, tmp_path_factory) -> dict:
    """The shared checkpoints plus a thin-plate-spline one (its control points spread like the others')."""
    tps = _build_one("tps", tmp_path_factory.mktemp("tps-checkpoint"), prepare_small_lfw(lfw_dir, per_identity=2))
    return {**checkpoints, "tps": tps}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("family", [*FAMILIES, "tps"])
def test_export_matches_pytorch_on_real_crops(family, fmt, with_tps, batch, tmp_path):
    embedder = FaceEmbedder.from_checkpoint(with_tps[family])
    path = export(embedder, fmt, tmp_path / f"{family}.{'onnx' if fmt == 'onnx' else 'pt'}", batch_size=EXPORT_BATCH)
    got = run_exported(path, batch)  # another batch size than the traced one
    with torch.no_grad():
        expected = ExportedEmbedder(embedder.net).eval()(batch).numpy()
    assert got.shape == (RUN_BATCH, embedder.embedding_size)
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the exported embedding is the un-flipped feature of FaceEmbedder.embed
    np.testing.assert_allclose(got, embedder.embed(batch, flip=False).numpy(), atol=1e-4)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 16
        batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic
        meta = {p.key: json.loads(p.value) for p in model.metadata_props}
        assert meta["image_size"] == 128 and meta["transform"] == family and meta["normalized"] is True
    else:
        extra = {"stn_face.json": ""}
        torch.jit.load(str(path), _extra_files=extra)
        assert json.loads(extra["stn_face.json"])["embedding_size"] == 128


def test_raw_embeddings_export(checkpoints, batch, tmp_path):
    embedder = FaceEmbedder.from_checkpoint(checkpoints["projective"])
    path = export(embedder, "onnx", tmp_path / "raw.onnx", normalize=False)
    got = run_exported(path, batch)
    with torch.no_grad():
        expected = embedder.net(batch).numpy()
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.slow
def test_export_cli(checkpoints, tmp_path):
    import shutil

    ckpt = tmp_path / "model.ckpt"
    shutil.copy(checkpoints["affine"], ckpt)
    result = run_cli(["stn_face.cli.export", f"ckpt={ckpt}", "format=onnx"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model.onnx").is_file()  # beside the checkpoint by default
    assert "check: max |exported - PyTorch|" in result.stdout


def test_export_input_errors(checkpoints, capsys):
    from stn_face.cli import export as export_cli

    message = expect_input_error(capsys, export_cli.main, compose_cli(
        "export", [f"ckpt={checkpoints['affine']}", "format=tflite"]))
    assert "format=tflite is unknown" in message
    message = expect_input_error(capsys, export_cli.main, compose_cli(
        "export", [f"ckpt={checkpoints['affine']}", "opset=13"]))
    assert "opset" in message
