"""Real training on real face crops: every transform family learns; the CLI, DDP and sweeps work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from stn_face.data.datamodule import FaceDataModule
from stn_face.paths import REPO_ROOT
from tests.helpers import LFW_TRAIN_PEOPLE, compose_train, prepare_small_lfw, run_cli

pytestmark = pytest.mark.slow  # subprocess commands, DDP, sweeps, kill-and-resume


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def small_lfw(lfw_dir) -> Path:
    return prepare_small_lfw(lfw_dir)


@pytest.mark.parametrize("transform", ["identity", "similarity", "affine", "projective"])
def test_loss_goes_down_for_every_family(transform, small_lfw, tmp_path):
    cfg = compose_train([f"transform={transform}", "backbone=tiny", "head=arcface_small", "optimizer.lr=0.05",
                         "model.margin_warmup_steps=0", "scheduler.warmup_steps=0"], tmp_path)
    L.seed_everything(0)
    datamodule = FaceDataModule(root=str(small_lfw), identities=LFW_TRAIN_PEOPLE[:5], batch_size=30,
                                num_workers=0, max_images_per_identity=6, augment={"hflip": 0.0})
    datamodule.setup("fit")
    assert datamodule.num_classes == 5 and len(datamodule.train_set) == 30
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    start = [p.detach().clone() for p in model.transformer.parameters()]
    recorder = LossRecorder()
    trainer = L.Trainer(max_steps=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[recorder], default_root_dir=tmp_path,
                        num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    losses = recorder.losses
    assert len(losses) == 12
    # full-batch training on 30 real faces of 5 people: the loss falls clearly
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    moved = [float((p.detach() - q).abs().max()) for p, q in zip(model.transformer.parameters(), start)]
    if transform == "identity":
        assert moved == []
    else:
        assert max(moved) > 0, "the localization net did not learn"


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


SMOKE = ["experiment=smoke", "trainer.max_steps=6", "trainer.val_check_interval=6", "eval.max_pairs_per_fold=20"]


def test_smoke_experiment_cli(lfw_dir, tmp_path):
    result = run_cli(["stn_face.cli.train", *SMOKE, f"paths.log_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["n_pairs"] == 40
    assert 0.0 <= metrics["accuracy_mean"] <= 1.0 and 0.0 <= metrics["auc"] <= 1.0
    # progress counts the run's steps (of max_steps), and the run folder is announced at the start
    output = result.stdout + result.stderr
    assert "train steps" in output and "6/6" in output and f"run folder: {run}" in output
    # the checkpoint interval said is the configured one (callbacks.periodic_checkpoint, 200 steps)
    assert "checkpoints/last.ckpt       every 200 steps and at the end" in output
    assert (run / ".hydra" / "config.yaml").exists() and (run / "roc_lfw_view1.png").stat().st_size > 5000
    assert (run / "checkpoints" / "last.ckpt").exists()
    # one last.ckpt (no last-v1.ckpt from a second save_last callback) and the best checkpoint
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step000006.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert len(ckpt["FaceDataModule"]["class_names"]) == 20
    # self-describing: the network rebuilds from the checkpoint alone (stn_face.embedder)
    assert ckpt["model_config"]["transform"]["transform"] == "projective" and "backbone" in ckpt["model_config"]


def test_ddp_cpu_two_processes(lfw_dir, tmp_path):
    result = run_cli(["stn_face.cli.train", *SMOKE, "trainer=ddp_cpu", f"paths.log_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["n_pairs"] == 40
    log = (run / "train.log").read_text() + result.stderr
    assert "world_size: 2" in log or "distributed_backend=gloo" in log


def test_four_job_transform_sweep(lfw_dir, tmp_path):
    result = run_cli(["stn_face.cli.train", "-m", *SMOKE, "trainer.max_steps=3", "trainer.val_check_interval=3",
                      "transform=identity,similarity,affine,projective", f"paths.log_dir={tmp_path}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(tmp_path)
    assert len(runs) == 4
    transforms = set()
    for run in runs:
        config = (run / ".hydra" / "config.yaml").read_text()
        transforms |= {t for t in ("identity", "similarity", "affine", "projective") if f"transform: {t}" in config}
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 3
    assert transforms == {"identity", "similarity", "affine", "projective"}


def test_ddp_evaluation_equals_single_process(lfw_dir, tmp_path):
    """The same checkpoint scored on 1 process and on 2 DDP processes (gloo) gives identical metrics:
    DistributedSampler's padding duplicates are dropped before scoring."""
    base = [*SMOKE, "eval.max_pairs_per_fold=37"]
    result = run_cli(["stn_face.cli.train", *base, f"hydra.run.dir={tmp_path / 'train'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    scores = {}
    for trainer in ("cpu", "ddp_cpu"):
        out = tmp_path / trainer
        result = run_cli(["stn_face.cli.train", *base, "train=false", f"ckpt_path={ckpt}", f"trainer={trainer}",
                          "data.eval_batch_size=16", f"hydra.run.dir={out}"])
        assert result.returncode == 0, result.stderr[-3000:]
        scores[trainer] = json.loads((out / "metrics.json").read_text())
    single, ddp = scores["cpu"], scores["ddp_cpu"]
    # 74 pairs of 129 distinct images: the 2-rank DistributedSampler pads one duplicate
    assert single["n_pairs"] == ddp["n_pairs"] == 74
    for key in ("accuracy_mean", "auc", "eer", "best_threshold", "fold_accuracies", "tar_at_far"):
        assert single[key] == ddp[key], key


def test_validate_only_reports_the_set_asked_for_at_the_checkpoint_step(lfw_dir, tmp_path):
    """``train=false ckpt_path=... eval=lfw``: metrics.json holds the LFW View 2 result at the top level
    (not the checkpoint's stored View 1 validation) and the step of the checkpoint's weights; a
    non-default checkpoint is evaluated without repeating the configs it was trained with."""
    result = run_cli(["stn_face.cli.train", *SMOKE, f"hydra.run.dir={tmp_path / 'train'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    out = tmp_path / "validate"
    # none of the smoke experiment's settings: the network (a tiny backbone) is built from the checkpoint
    result = run_cli(["stn_face.cli.train", "train=false", f"ckpt_path={ckpt}", "eval=lfw", "eval.max_pairs_per_fold=5",
                      "logger=csv", f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"] == "lfw" and metrics["kind"] == "validate"
    assert metrics["n_pairs"] == 100 and metrics["pairs_file"].endswith("pairs.txt")
    assert metrics["step"] == 6 and metrics["sets"]["lfw"]["step"] == 6
    assert set(metrics["sets"]) == {"lfw"} and metrics["max_pairs_per_fold"] == 5


def test_untrained_frozen_pretrained_network_is_scored_as_configured(lfw_dir, tmp_path):
    """``train=false`` with no checkpoint scores a frozen pretrained backbone behind the transformer's start
    view (no step taken); the record says so and the report treats the run as seed-free. Without a frozen
    backbone there is nothing meaningful to score: one line, exit 2."""
    pytest.importorskip("dlib")  # only for the dev extra's face-recognition-models, which holds the weights
    from stn_face.evaluation.report import find_runs

    base = ["experiment=smoke", "eval=lfw", "eval.max_pairs_per_fold=5", "transform=identity"]
    refused = run_cli(["stn_face.cli.train", *base, "train=false", f"hydra.run.dir={tmp_path / 'refused'}"])
    assert refused.returncode == 2
    assert "give ckpt_path=PATH" in refused.stderr and "model.freeze_backbone=true" in refused.stderr
    out = tmp_path / "untrained"
    result = run_cli(["stn_face.cli.train", *base, "backbone=dlib_resnet", "model.freeze_backbone=true",
                      "train=false", f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "validate" and metrics["untrained"] is True and metrics["step"] == 0
    assert metrics["n_pairs"] == 100
    # dlib's network on 1.3x crops (86.6 % on all 6,000 pairs): far above chance even on 100 pairs
    assert metrics["accuracy_mean"] >= 0.75, metrics["accuracy_mean"]
    (run,) = find_runs(tmp_path)
    assert run.seed is None and run.transform == "identity"


# ------------------------------------------------------------------- kill and resume
RESUME_SMOKE = ["experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0"]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8
    return checkpoint["state_dict"]


def test_killed_run_resumes_exactly(lfw_dir, tmp_path):
    """8 steps straight vs. killed (SIGKILL) after the step-4 checkpoint and resumed with ckpt_path=last."""
    args = ["stn_face.cli.train", *RESUME_SMOKE, "trainer.max_steps=8", "trainer.val_check_interval=8",
            "callbacks.periodic_checkpoint.every_n_train_steps=4", "seed=7"]
    straight = tmp_path / "straight"
    result = run_cli([*args, f"hydra.run.dir={straight}"])
    assert result.returncode == 0, result.stderr[-2000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={killed}"], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = torch.load(last, map_location="cpu", weights_only=False)
    step = at_kill["global_step"]
    assert step == 4, f"the kill came too late (checkpoint at step {step})"

    result = run_cli([*args, f"hydra.run.dir={killed}", "ckpt_path=last"])
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())
    assert worst < 1e-6, f"resumed weights differ by {worst}"
    # the resumed run really did train on from step 4
    assert any(not torch.equal(at_kill["state_dict"][k], b[k]) for k in b)
