"""StnFaceModule's training step: non-finite steps are skipped and counted, the same seed repeats exactly."""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from tests.helpers import compose_train


class _Faces(torch.utils.data.Dataset):
    def __init__(self, nan: bool):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(8, 3, 128, 128, generator=generator)
        if nan:
            self.images[3, 0, 10, 10] = float("nan")
        self.labels = torch.arange(8) % 4

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _fit_one_step(dataset, tmp_path, transform="projective"):
    cfg = compose_train([f"transform={transform}", "backbone=tiny", "scheduler=multistep"], tmp_path)
    L.seed_everything(0)
    model = instantiate(cfg.model, num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=DataLoader(dataset, batch_size=8))
    return model, before, trainer


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    model, before, trainer = _fit_one_step(_Faces(nan=True), tmp_path)
    assert model.skipped_steps == 1
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 1.0
    after = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    assert all(torch.equal(before[k], after[k]) for k in params), "a NaN step changed the weights"
    assert all(torch.isfinite(after[k]).all() for k in params)


def test_finite_step_updates_weights(tmp_path):
    model, before, _ = _fit_one_step(_Faces(nan=False), tmp_path)
    assert model.skipped_steps == 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if "weight" in k)


def test_same_seed_repeats_exactly(tmp_path):
    a, _, _ = _fit_one_step(_Faces(nan=False), tmp_path / "a")
    b, _, _ = _fit_one_step(_Faces(nan=False), tmp_path / "b")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name

