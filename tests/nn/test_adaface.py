"""AdaFace head: the margin against the paper's formulas, its running norm statistics, and real training."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from stn_face.data.datamodule import FaceDataModule
from stn_face.nn.adaface import AdaFaceHead, quality_scaler
from tests.helpers import LFW_TRAIN_PEOPLE, compose_train, prepare_small_lfw

S, M, H = 64.0, 0.4, 0.333


def _paper_logits(z: np.ndarray, w: np.ndarray, labels: np.ndarray, mean: float, std: float,
                  eps: float = 1e-3) -> np.ndarray:
    """AdaFace eq. 11-12 in numpy: target s (cos(θ + g_angle) - g_add), others s cos θ, with
    g_angle = -m ẑ, g_add = m ẑ + m and ẑ = clip(h (‖z‖ - μ) / (σ + eps), -1, 1)."""
    norms = np.linalg.norm(z, axis=1)
    cos = (z / norms[:, None]) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    zhat = np.clip(H * (np.clip(norms, 0.001, 100) - mean) / (std + eps), -1, 1)
    out = S * cos
    for i, y in enumerate(labels):
        theta = math.acos(cos[i, y])
        out[i, y] = S * (math.cos(theta - M * zhat[i]) - (M * zhat[i] + M))
    return out


def _head_with_stats(mean: float, std: float, classes: int = 5, dim: int = 8) -> AdaFaceHead:
    torch.manual_seed(0)
    head = AdaFaceHead(dim, classes)
    head.batch_mean.fill_(mean)
    head.batch_std.fill_(std)
    return head.eval()  # eval: the statistics stay where they were put


def _embeddings_with_norms(norms: list[float], dim: int = 8, seed: int = 1) -> torch.Tensor:
    z = torch.randn(len(norms), dim, generator=torch.Generator().manual_seed(seed))
    return z / z.norm(dim=1, keepdim=True) * torch.tensor(norms)[:, None]


@pytest.mark.parametrize("norms", [
    [20.0, 20.0, 20.0],          # at the mean: ẑ = 0, CosFace with m
    [26.0, 35.0, 80.0],          # above: ẑ = 0.33·6/5.001... up to the clip at +1 (angular margin < 0)
    [15.0, 10.0, 0.5],           # below: ẑ down to the clip at -1 (ArcFace with m, no additive margin)
])
def test_margin_matches_the_paper_above_at_and_below_the_mean_norm(norms):
    head = _head_with_stats(mean=20.0, std=5.0)
    z = _embeddings_with_norms(norms)
    labels = torch.tensor([0, 3, 4])
    ours = head(z, labels).detach().numpy()
    expected = _paper_logits(z.numpy().astype(np.float64), head.weight.detach().numpy().astype(np.float64),
                             labels.numpy(), 20.0, 5.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)
    zhat = quality_scaler(z.norm(dim=1), head.batch_mean, head.batch_std, H)
    if norms[0] == 20.0:
        assert torch.allclose(zhat, torch.zeros(3), atol=1e-5)
    elif norms[0] > 20:
        assert 0 < float(zhat[0]) < 1 and float(zhat[2]) == 1.0
    else:
        assert -1 < float(zhat[0]) < 0 and float(zhat[2]) == -1.0


def test_extremes_are_arcface_and_the_angular_margin_stops_at_zero():
    """ẑ = -1: s cos(θ + m) (ArcFace's target); ẑ = +1: s (cos(max(θ - m, 0)) - 2m)."""
    head = _head_with_stats(mean=20.0, std=1.0)
    w = head.weight.detach()
    z = torch.stack([w[2] / w[2].norm() * 0.5, w[2] / w[2].norm() * 90.0])  # θ = 0 for both
    logits = head(z, torch.tensor([2, 2])).detach()
    theta = math.acos(min(float(torch.nn.functional.cosine_similarity(z[:1], w[2:3])), 1 - 1e-7))
    assert logits[0, 2].item() == pytest.approx(S * math.cos(theta + M), rel=1e-4)  # low quality: ArcFace
    assert logits[1, 2].item() == pytest.approx(S * (1.0 - 2 * M), rel=1e-4)   # θ - m < 0 clipped to 0


def test_no_labels_or_no_margin_gives_plain_scaled_cosines():
    head = _head_with_stats(mean=20.0, std=5.0)
    z = _embeddings_with_norms([12.0, 30.0])
    plain = S * torch.nn.functional.linear(torch.nn.functional.normalize(z),
                                           torch.nn.functional.normalize(head.weight))
    assert torch.allclose(head(z).detach(), plain.detach(), atol=1e-4)
    assert torch.allclose(head(z, torch.tensor([1, 2]), margin_factor=0.0).detach(), plain.detach(), atol=1e-4)


def test_running_statistics_move_in_training_only_and_live_in_the_checkpoint():
    head = AdaFaceHead(8, 5, t_alpha=0.1)
    z = _embeddings_with_norms([10.0, 14.0, 30.0])
    head.eval()
    head(z, torch.tensor([0, 1, 2]))
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0
    head.train()
    head(z, torch.tensor([0, 1, 2]))
    norms = np.array([10.0, 14.0, 30.0])
    assert head.batch_mean.item() == pytest.approx(0.9 * 20 + 0.1 * norms.mean(), rel=1e-5)
    assert head.batch_std.item() == pytest.approx(0.9 * 100 + 0.1 * norms.std(ddof=1), rel=1e-5)
    state = head.state_dict()
    assert {"batch_mean", "batch_std"} <= set(state)
    other = AdaFaceHead(8, 5)
    other.load_state_dict(state)
    assert other.batch_mean.item() == head.batch_mean.item() and other.batch_std.item() == head.batch_std.item()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="t_alpha"):
        AdaFaceHead(8, 5, t_alpha=0.0)
    with pytest.raises(ValueError, match=r"head\.h must"):
        AdaFaceHead(8, 5, h=-1.0)


def test_config_builds_the_paper_defaults(tmp_path):
    cfg = compose_train(["head=adaface", "backbone=tiny"], tmp_path)
    model = instantiate(cfg.model, num_classes=7)
    assert isinstance(model.head, AdaFaceHead)
    assert (model.head.s, model.head.m, model.head.h, model.head.t_alpha) == (64.0, 0.4, 0.333, 0.01)


class _LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
def test_real_training_with_adaface_lowers_the_loss(lfw_dir, tmp_path):
    """12 full-batch steps on 30 real MTCNN crops of 5 LFW people: the loss falls and the running
    norm statistics leave their start values."""
    small = prepare_small_lfw(lfw_dir)
    cfg = compose_train(["transform=projective", "backbone=tiny", "head=adaface", "head.s=16",
                         "optimizer.lr=0.05", "model.margin_warmup_steps=0", "scheduler.warmup_steps=0"], tmp_path)
    L.seed_everything(0)
    datamodule = FaceDataModule(root=str(small), identities=LFW_TRAIN_PEOPLE[:5], batch_size=30, num_workers=0,
                                max_images_per_identity=6, augment={"hflip": 0.0})
    datamodule.setup("fit")
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    recorder = _LossRecorder()
    trainer = L.Trainer(max_steps=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[recorder], default_root_dir=tmp_path,
                        num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    losses = recorder.losses
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert model.head.batch_mean.item() != 20.0 and model.head.batch_std.item() < 100.0


@pytest.mark.slow
def test_smoke_run_trains_adaface_and_its_checkpoint_keeps_the_statistics(lfw_dir, tmp_path):
    """`stn-face-train experiment=smoke head=adaface`: the CLI path end to end, and the running
    statistics are in last.ckpt (read tensors-only)."""
    from stn_face.checkpoint import load_checkpoint
    from tests.helpers import run_cli

    result = run_cli(["stn_face.cli.train", "experiment=smoke", "head=adaface", "trainer.max_steps=6",
                      "trainer.val_check_interval=6", "eval.max_pairs_per_fold=20", f"paths.log_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt_path,) = tmp_path.rglob("last.ckpt")
    state = load_checkpoint(ckpt_path)["state_dict"]
    assert float(state["head.batch_mean"]) != 20.0 and float(state["head.batch_std"]) != 100.0
    assert (ckpt_path.parent.parent / "metrics.json").exists()
