"""model.freeze_backbone / model.backbone_lr_mult: real training steps on LFW photos leave a frozen
backbone bitwise unchanged (weights and BatchNorm buffers) while the localization net learns."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import compose_train


def _lfw_batch(lfw_dir, size: int, count: int = 8) -> TensorDataset:
    """``count`` real LFW photos of 4 people (2 each), resized and normalised as the data pipeline does."""
    from stn_face.data.augment import eval_transform
    from stn_face.data.images import read_rgb

    transform = eval_transform(size)
    people = [p for p in sorted((lfw_dir / "lfw-deepfunneled").iterdir()) if len(list(p.glob("*.jpg"))) >= 2]
    images, labels = [], []
    for label, person in enumerate(people[:count // 2]):
        for path in sorted(person.glob("*.jpg"))[:2]:
            images.append(transform(image=read_rgb(path))["image"])
            labels.append(label)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


def _train(cfg, dataset, tmp_path, steps: int):
    L.seed_everything(0)
    model = instantiate(cfg.model, num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=DataLoader(dataset, batch_size=4, shuffle=False))
    model.trainer_used = trainer
    return model, before


def _changed(model, before, prefix: str) -> list[str]:
    return [k for k, v in model.state_dict().items() if k.startswith(prefix) and not torch.equal(before[k], v)]


@pytest.mark.data
def test_frozen_backbone_is_bitwise_unchanged(lfw_dir, tmp_path, one_thread):
    cfg = compose_train(["transform=projective", "backbone=tiny", "model.freeze_backbone=true",
                         "model.margin_warmup_steps=0", "optimizer.lr=0.1", "model.localization_lr_mult=1.0"],
                        tmp_path)
    model, before = _train(cfg, _lfw_batch(lfw_dir, 128), tmp_path, steps=3)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert _changed(model, before, "backbone.") == []  # weights, running means/variances, counters
    assert not model.backbone.training and model.training  # eval mode inside a training model
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert _changed(model, before, "transformer.localization."), "the localization net did not learn"
    assert _changed(model, before, "head."), "the head did not learn"


@pytest.mark.data
def test_frozen_dlib_resnet_trains_the_transformer(lfw_dir, tmp_path, one_thread):
    pytest.importorskip("dlib")  # only for the dev extra's face-recognition-models, which holds the weights
    cfg = compose_train(["transform=similarity", "localization=conv1_fc1", "backbone=dlib_resnet",
                         "head=arcface_small", "data.image_size=160",
                         "model.freeze_backbone=true", "model.margin_warmup_steps=0", "optimizer.lr=0.1",
                         "model.localization_lr_mult=1.0"], tmp_path)
    model, before = _train(cfg, _lfw_batch(lfw_dir, 160), tmp_path, steps=2)
    assert _changed(model, before, "backbone.") == []
    assert _changed(model, before, "transformer.localization.")
    # the backbone holds dlib's weights, not a random initialisation
    from stn_face.nn import DlibResNet
    from stn_face.nn.pretrained import load_pretrained

    reference = load_pretrained(DlibResNet(weights=cfg.backbone.weights))
    assert torch.equal(model.backbone.fc.weight, reference.fc.weight)
    # its checkpoint holds the backbone: FaceEmbedder (stn-face-embed ckpt=...) rebuilds the same network
    from stn_face.checkpoint import model_config
    from stn_face.embedder import FaceEmbedder

    model.model_config = model_config(cfg)
    path = tmp_path / "frozen.ckpt"
    model.trainer_used.save_checkpoint(path)
    embedder = FaceEmbedder.from_checkpoint(path)
    images = _lfw_batch(lfw_dir, 160).tensors[0][:2]
    with torch.no_grad():
        torch.testing.assert_close(embedder.net(images), model.eval()(images))


def test_backbone_lr_mult_makes_its_own_group(tmp_path):
    cfg = compose_train(["transform=projective", "backbone=tiny", "model.backbone_lr_mult=0.1", "optimizer.lr=0.2"],
                        tmp_path)
    model = instantiate(cfg.model, num_classes=4)
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["backbone"]["lr"] == pytest.approx(0.02)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in groups["main"]["params"]}
    default = instantiate(compose_train(["transform=projective", "backbone=tiny"], tmp_path).model, num_classes=4)
    assert [g["name"] for g in default.parameter_groups()] == ["main", "localization"]
    assert np.isclose(default.backbone_lr_mult, 1.0) and default.freeze_backbone is False
