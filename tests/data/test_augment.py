"""The augmentation pipelines: sizes, the one normalisation, flips and the misalignment jitter."""

from __future__ import annotations

import numpy as np
import torch

from stn_face.data.augment import eval_transform, train_transform
from stn_face.data.images import MEAN, STD


def _image() -> np.ndarray:
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[:, :20] = 255  # left half white
    return image


def test_eval_pipeline_resizes_and_normalises_with_the_one_constants() -> None:
    out = eval_transform(20)(image=_image())["image"]
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32
    white, black = (1.0 - MEAN[0]) / STD[0], (0.0 - MEAN[0]) / STD[0]
    assert torch.allclose(out[:, :, :9], torch.tensor(white)) and torch.allclose(out[:, :, 11:], torch.tensor(black))


def test_train_pipeline_flips_and_jitters_only_when_asked() -> None:
    flipped = train_transform(20, hflip=1.0)(image=_image())["image"]
    assert torch.allclose(flipped[:, :, 11:], torch.tensor((1.0 - MEAN[0]) / STD[0]))  # white now on the right
    plain = train_transform(20, hflip=0.0)(image=_image())["image"]
    assert torch.equal(plain, eval_transform(20)(image=_image())["image"])
    names = [type(t).__name__ for t in train_transform(20, rotate_limit=10, perspective=0.05).transforms]
    assert names == ["Resize", "HorizontalFlip", "Affine", "Perspective", "Normalize", "ToTensorV2"]


def test_eval_batch_is_eval_transform_image_by_image_bitwise() -> None:
    from stn_face.data.augment import eval_batch

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((128, 128), (250, 250), (90, 120))]
    for size in (112, 128, 160):
        expected = torch.stack([eval_transform(size)(image=image)["image"] for image in images])
        batch = eval_batch(images, size)
        assert batch.shape == (3, 3, size, size) and batch.dtype == torch.float32 and batch.is_contiguous()
        assert torch.equal(batch, expected), size
    same_size = np.stack([images[0], images[0][::-1]])  # one (B, S, S, 3) array, used without a list
    assert torch.equal(eval_batch(same_size, 128), torch.stack([eval_transform(128)(image=i)["image"] for i in same_size]))
