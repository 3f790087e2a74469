"""``head=partial_fc`` in real ``stn-face-train`` runs on ``trainer=ddp_cpu`` (2 processes, gloo).

- ``sample_rate=1``: one SGD step with the sharded head gives the weights of one step with the full ArcFace
  head replicated on both ranks (DDP's own averaging); the checkpoint holds the whole head and its momentum,
  and ``FaceEmbedder`` loads it. (One step: later steps amplify float32 rounding, whichever head: in one
  process a 1e-7 relative change of the initial weights moved them by 0.26 after 2 steps of 12 crops at
  lr 0.1, and the full head under DDP parted from one process by 3.5e-3 after 3 steps.)
- ``sample_rate=0.3`` on 299 CelebA identities (about 45 of each rank's 150 centres a step: the batch's
  classes plus random others): the loss falls from the first pass over the images to the second, and a run
  killed (both processes) after its step-12 checkpoint and resumed with ``ckpt_path=last`` ends with the
  weights of the uninterrupted run.
The head's equality with one process on the same batch is tests/nn/test_partial_fc.py.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stn_face.paths import REPO_ROOT, cache_dir
from tests.helpers import run_cli
from tests.packed_helpers import celeba_crops_root

pytestmark = pytest.mark.slow

DDP = ["stn_face.cli.train", "experiment=smoke", "trainer=ddp_cpu", "eval.max_pairs_per_fold=5", "data.num_workers=0"]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())


def test_full_rate_over_two_ranks_trains_like_the_full_head(lfw_dir, tmp_path):
    # fp32 on every CPU: where the CPU trainer picks bf16-mixed (AVX512-BF16 or AMX), the two heads' bf16
    # matrix products round differently (gradients apart by about 1 %, measured on an AMD EPYC with
    # AVX512-BF16), which says nothing about whether Partial FC computes the same function
    args = [*DDP, "trainer.max_steps=1", "trainer.val_check_interval=1", "model.margin_warmup_steps=0", "seed=5",
            "trainer.precision=32-true"]
    runs = {}
    for head in ("arcface", "partial_fc"):
        runs[head] = tmp_path / head
        result = run_cli([*args, f"head={head}", f"hydra.run.dir={runs[head]}"], timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    full, partial = _checkpoint(runs["arcface"]), _checkpoint(runs["partial_fc"])
    assert partial["global_step"] == 1 and partial["state_dict"]["head.weight"].shape == (20, 128)
    params = {k for k in full["state_dict"] if "running_" not in k and "num_batches" not in k}
    worst = _worst({k: full["state_dict"][k] for k in params}, {k: partial["state_dict"][k] for k in params})
    assert worst < 1e-5, f"weights after one step differ by {worst}"
    # the whole momentum of the centres, in class order (each rank's rows gathered into the file)
    groups = {g["name"]: g["params"] for g in partial["optimizer_states"][0]["param_groups"]}
    momentum = partial["optimizer_states"][0]["state"][groups["sharded_head"][0]]["momentum_buffer"]
    expected = full["optimizer_states"][0]["state"][_optimiser_order(tmp_path).index("head.weight")]["momentum_buffer"]
    assert momentum.shape == expected.shape == (20, 128)
    assert float((momentum - expected).abs().max()) < 1e-6 * float(expected.abs().max())

    from stn_face.embedder import FaceEmbedder

    crops = sorted((cache_dir() / "prepared" / "lfw-crop128").rglob("*.jpg"))[:4]
    a, b = (FaceEmbedder.from_checkpoint(runs[head] / "checkpoints" / "last.ckpt").embed_files(crops, progress=False)
            for head in ("arcface", "partial_fc"))
    assert len(crops) == 4 and abs(a - b).max() < 1e-4


def _optimiser_order(tmp_path: Path) -> list[str]:
    """The parameter names of the full-head smoke model in the order of its optimiser state."""
    from hydra.utils import instantiate

    from tests.helpers import compose_train

    model = instantiate(compose_train(["experiment=smoke", "head=arcface"], tmp_path).model, num_classes=20)
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in model.parameter_groups() for p in group["params"]]


@pytest.fixture(scope="module")
def celeba_two_per_identity(celeba_dir, tmp_path_factory) -> Path:
    return celeba_crops_root(celeba_dir, 299, tmp_path_factory.mktemp("celeba-299"))


def _losses(run: Path) -> list[float]:
    with open(run / "csv" / "version_0" / "metrics.csv") as stream:
        return [float(row["train/loss"]) for row in csv.DictReader(stream) if row.get("train/loss")]


def test_sampled_run_learns_and_resumes_exactly_after_a_kill(celeba_two_per_identity, tmp_path):
    # 299 identities x 2 images, 16 a rank: 18 steps a pass; softmax (s = 16) over the sampled centres
    args = [*DDP, "head=partial_fc", "head.sample_rate=0.3", "head.s=16", "data=folder",
            f"data.root={celeba_two_per_identity}", "data.max_identities=null", "data.min_images_per_identity=2",
            "data.max_images_per_identity=2", "data.batch_size=16", "data.augment.hflip=0", "optimizer.lr=0.02",
            "model.margin_warmup_steps=1000", "trainer.max_steps=36", "trainer.val_check_interval=36",
            "trainer.log_every_n_steps=1", "callbacks.periodic_checkpoint.every_n_train_steps=12", "seed=3"]
    straight = tmp_path / "straight"
    result = run_cli([*args, f"hydra.run.dir={straight}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = _losses(straight)
    assert len(losses) == 36
    first, second = sum(losses[:18]) / 18, sum(losses[18:]) / 18
    assert second < 0.8 * first, losses

    killed = tmp_path / "killed"
    # a session of its own, so both ranks (rank 1 is rank 0's child) are killed at once
    process = subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={killed}"], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 900
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    at_kill = torch.load(last, map_location="cpu", weights_only=True)
    assert at_kill["global_step"] == 12, f"the kill came too late (checkpoint at step {at_kill['global_step']})"
    assert at_kill["state_dict"]["head.weight"].shape == (299, 128)  # every rank's shard is in the file

    result = run_cli([*args, f"hydra.run.dir={killed}", "ckpt_path=last"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _checkpoint(straight), _checkpoint(killed)
    assert a["global_step"] == b["global_step"] == 36
    worst = _worst(a["state_dict"], b["state_dict"])
    assert worst < 1e-6, f"resumed weights differ by {worst}"
    assert any(not torch.equal(at_kill["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
