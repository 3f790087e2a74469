"""FaceEmbedder: rebuilt from real checkpoints of every transform family, embedding real LFW crops."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stn_face.data.images import ImageReadError, read_rgb
from stn_face.embedder import FaceEmbedder
from stn_face.errors import CheckpointError
from tests.helpers import FAMILIES, THRESHOLD, real_crops

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def crops(view2_crops):
    root, names = view2_crops
    return real_crops(names, root, 6)


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuilds_every_family_from_its_checkpoint(family, checkpoints):
    embedder = FaceEmbedder.from_checkpoint(checkpoints[family])
    ckpt = torch.load(checkpoints[family], map_location="cpu", weights_only=True)
    assert ckpt["model_config"]["transform"]["transform"] == family  # written by on_save_checkpoint
    assert embedder.transform_name == family and embedder.image_size == 128 and embedder.embedding_size == 128
    assert embedder.class_names == ckpt["FaceDataModule"]["class_names"] and len(embedder.class_names) == 4
    assert embedder.threshold == THRESHOLD and embedder.threshold_set == "lfw"  # View 2 wins over View 1
    assert not embedder.net.training and not hasattr(embedder.net, "head")
    for name, value in embedder.net.state_dict().items():  # the trained weights, not a fresh init
        assert torch.equal(value, ckpt["state_dict"][name]), name


def test_embed_accepts_arrays_lists_tensors_and_sums_the_mirror(checkpoints, crops):
    embedder = FaceEmbedder.from_checkpoint(checkpoints["projective"])
    features = embedder.embed(crops)
    assert features.shape == (6, 128) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(np.stack(crops)), features, atol=1e-6)
    single = embedder.embed(crops[2])
    assert single.shape == (128,)
    np.testing.assert_allclose(single, features[2], atol=1e-5)
    batch = embedder.preprocess(crops)
    assert batch.shape == (6, 3, 128, 128) and -1.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    from_tensor = embedder.embed(batch, batch_size=4)
    assert isinstance(from_tensor, torch.Tensor)
    np.testing.assert_allclose(from_tensor.numpy(), features, atol=1e-6)
    # the paper's feature, spelled out
    with torch.no_grad():
        plain, mirrored = embedder.net(batch), embedder.net(batch.flip(-1))
    expected = F.normalize(F.normalize(plain) + F.normalize(mirrored))
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(embedder.embed(crops, flip=False), F.normalize(plain).numpy(), atol=1e-5)
    assert np.abs(embedder.embed(crops, flip=False) - features).max() > 1e-3
    # a different person scores lower than the same image
    score, same = embedder.compare(crops[0], crops[0])
    assert score == pytest.approx(1.0, abs=1e-5) and same is True


def test_embed_files_batches_and_reports_unreadable_files(checkpoints, view2_crops, tmp_path):
    root, names = view2_crops
    embedder = FaceEmbedder.from_checkpoint(checkpoints["affine"])
    paths = [root / n for n in names[:5]]
    features = embedder.embed_files(paths, batch_size=2, progress=False)
    np.testing.assert_allclose(features, embedder.embed([read_rgb(p) for p in paths]), atol=1e-5)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError):
        embedder.embed_files([paths[0], broken], progress=False)
    kept, failed = embedder.embed_files([paths[0], broken, paths[1]], progress=False, skip_errors=True)
    assert list(failed) == [str(broken)] and kept.shape == (2, 128)
    np.testing.assert_allclose(kept, features[:2], atol=1e-5)


def test_align_returns_the_faces_the_backbone_sees(checkpoints, crops):
    identity = FaceEmbedder.from_checkpoint(checkpoints["identity"])
    faces, matrices = identity.align(crops)
    assert faces.shape == (6, 112, 112, 3) and faces.dtype == np.uint8 and matrices.shape == (6, 3, 3)
    np.testing.assert_allclose(matrices[0], np.diag([0.875, 0.875, 1.0]), atol=1e-7)
    # a 0.875 zoom of a 128 crop samples exactly the pixel centres of its central 112 x 112
    resized = ((identity.preprocess(crops) * 0.5 + 0.5) * 255).round().permute(0, 2, 3, 1).numpy()
    assert np.abs(faces.astype(float) - resized[:, 8:120, 8:120]).max() <= 1.0
    projective = FaceEmbedder.from_checkpoint(checkpoints["projective"])
    face, matrix = projective.align(crops[0])
    assert face.shape == (112, 112, 3) and matrix.shape == (3, 3)
    _, matrices = projective.align(crops)
    assert np.abs(matrices - matrices[:1]).max() > 1e-3  # a learned transform: one per face


def test_crop_of_a_raw_photo_matches_the_prepared_crop(checkpoints, lfw_dir, view2_crops):
    root, names = view2_crops
    embedder = FaceEmbedder.from_checkpoint(checkpoints["similarity"])
    crop, status = embedder.crop(lfw_dir / "lfw-deepfunneled" / names[0])
    assert status == "detected" and crop.shape == (128, 128, 3)
    prepared = read_rgb(root / names[0])
    assert np.abs(crop.astype(int) - prepared.astype(int)).mean() < 1.0
    score, _ = embedder.compare(crop, prepared)
    assert score > 0.999


def test_checkpoint_problems_are_clear_errors(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        FaceEmbedder.from_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        FaceEmbedder.from_checkpoint(junk)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a stn-face-train checkpoint"):
        FaceEmbedder.from_checkpoint(tmp_path / "plain.pt")
    # weights of one architecture under the config of another
    ckpt = torch.load(checkpoints["similarity"], map_location="cpu", weights_only=True)
    ckpt["model_config"] = torch.load(checkpoints["affine"], map_location="cpu", weights_only=True)["model_config"]
    torch.save(ckpt, tmp_path / "mixed.ckpt")
    with pytest.raises(CheckpointError, match="another architecture"):
        FaceEmbedder.from_checkpoint(tmp_path / "mixed.ckpt")
    # no model_config and no run folder: cannot know the network
    del ckpt["model_config"]
    torch.save(ckpt, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="does not say which network"):
        FaceEmbedder.from_checkpoint(tmp_path / "bare.ckpt")


def test_older_checkpoints_rebuild_from_the_hydra_run_folder(checkpoints, tmp_path, crops):
    from omegaconf import OmegaConf

    from tests.helpers import LOCALIZATION, compose_train

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    ckpt = torch.load(checkpoints["similarity"], map_location="cpu", weights_only=True)
    del ckpt["model_config"]
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    cfg = compose_train(["transform=similarity", f"localization={LOCALIZATION['similarity']}", "backbone=tiny",
                         "head=arcface_small"])
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    old = FaceEmbedder.from_checkpoint(run)  # a run folder means its checkpoints/last.ckpt
    new = FaceEmbedder.from_checkpoint(checkpoints["similarity"])
    np.testing.assert_allclose(old.embed(crops), new.embed(crops), atol=1e-6)


@pytest.mark.slow
def test_import_stn_face_stays_light():
    code = ("import sys, stn_face; assert 'torch' not in sys.modules, 'torch imported'; "
            "cls = stn_face.FaceEmbedder; assert cls.__module__ == 'stn_face.embedder'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_embed_files_through_a_pixel_pack_gives_the_same_embeddings(checkpoints, view2_crops, tmp_path):
    root, names = view2_crops
    embedder = FaceEmbedder.from_checkpoint(checkpoints["projective"])
    paths = [root / n for n in names[:7]]
    from_files = embedder.embed_files(paths, batch_size=3, progress=False)
    first = embedder.embed_files(paths, batch_size=3, progress=False, pixel_cache=tmp_path)  # writes the pack
    second = embedder.embed_files(paths, batch_size=3, progress=False, pixel_cache=tmp_path)  # reads it
    assert np.array_equal(first, from_files) and np.array_equal(second, from_files)
    assert len(list(tmp_path.glob("pixels-128-*.npy"))) == 1
    with pytest.raises(ValueError, match="skip_errors"):
        embedder.embed_files(paths, progress=False, pixel_cache=tmp_path, skip_errors=True)
