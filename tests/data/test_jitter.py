"""Deterministic evaluation jitter for the misalignment study, on real LFW crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stn_face.data.augment import eval_transform
from stn_face.data.datamodule import FaceDataModule
from stn_face.data.datasets import FaceImageDataset
from stn_face.data.jitter import JitteredFaceDataset, jitter_homography, jitter_image, rotation_of
from tests.helpers import LFW_TRAIN_PEOPLE, prepare_small_lfw

STRONG = {"seed": 0, "rotate_limit": 30, "scale_limit": 0.15, "shift_px": 12, "perspective": 0.05}


@pytest.fixture(scope="module")
def crops(lfw_dir):
    root = prepare_small_lfw(lfw_dir)
    return sorted(root.glob(f"{LFW_TRAIN_PEOPLE[0]}/*.jpg"))[:4]


def test_homography_ranges():
    rotations = [rotation_of(jitter_homography(np.random.default_rng([0, i]), 128, 128, rotate_limit=30))
                 for i in range(200)]
    assert max(map(abs, rotations)) <= 30 and max(rotations) > 25 and min(rotations) < -25
    assert np.allclose(jitter_homography(np.random.default_rng(1), 128, 128), np.eye(3))


def test_eval_jitter_is_deterministic_per_index(crops):
    plain = FaceImageDataset(crops, None, eval_transform(128))
    jittered = JitteredFaceDataset(crops, None, eval_transform(128), STRONG)
    again = JitteredFaceDataset(list(reversed(crops)), None, eval_transform(128), STRONG)
    assert torch.equal(jittered[2][0], jittered[2][0])
    assert torch.equal(jittered[1][0], again[1][0]) is False  # another image at that index
    # the same image at the same index: identical, whatever the dataset object
    assert torch.equal(JitteredFaceDataset(crops, None, eval_transform(128), STRONG)[3][0], jittered[3][0])
    differences = [float((jittered[i][0] - plain[i][0]).abs().mean()) for i in range(len(crops))]
    assert min(differences) > 0.05  # every crop really moved (values in [-1, 1])
    # zero limits change nothing
    still = JitteredFaceDataset(crops, None, eval_transform(128), {"seed": 0})
    assert torch.equal(still[0][0], plain[0][0])
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)), dtype=np.uint8)
    assert np.array_equal(jitter_image(image, 5, **STRONG), jitter_image(image, 5, **STRONG))
    assert not np.array_equal(jitter_image(image, 5, **STRONG), jitter_image(image, 6, **STRONG))


def test_datamodule_wires_eval_jitter(crops, lfw_dir):
    from stn_face.data.eval_sets import VerificationSet

    root = crops[0].parent.parent
    eval_set = VerificationSet(name="lfw_view1", protocol="lfw", pairs_file=str(lfw_dir / "pairsDevTest.txt"),
                               image_root=str(lfw_dir / "lfw-deepfunneled"), prepared_root=str(root),
                               max_pairs_per_fold=2).load()
    eval_set.prepare({}, workers=1, progress=False)
    dm = FaceDataModule(root=str(root), identities=LFW_TRAIN_PEOPLE[:3], num_workers=0, eval_sets=[eval_set],
                        eval_jitter=STRONG)
    dm.setup("fit")
    (dataset,) = dm.eval_datasets
    assert isinstance(dataset, JitteredFaceDataset) and dataset.jitter["rotate_limit"] == 30
    # 2 same + 2 different DevTest pairs name 7 distinct images
    assert len(eval_set.pairs) == 4 and len(dataset) == len(eval_set.items) == 7
