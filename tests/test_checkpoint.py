"""Checkpoints are never half-written, and weights of another architecture are one clear error."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from stn_face.checkpoint import atomic_torch_save
from stn_face.paths import REPO_ROOT
from tests.helpers import run_cli

SMOKE = ["experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0"]


@pytest.mark.slow
def test_checkpoint_write_is_atomic(tmp_path):
    """A process killed while saving leaves either no file or a complete, loadable one."""
    target = tmp_path / "model.ckpt"
    script = (
        "import torch, sys; from stn_face.checkpoint import atomic_torch_save\n"
        "big = {'w': torch.randn(4_000_000)}\n"
        "atomic_torch_save(big, sys.argv[1]); print('saved', flush=True)\n"
        "while True: atomic_torch_save(big, sys.argv[1])\n"
    )
    for delay in (0.05, 0.3, 0.7):
        process = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "saved"
        time.sleep(delay)  # kill somewhere in the middle of later saves
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert target.exists()
        assert torch.load(target, weights_only=True)["w"].numel() == 4_000_000


def test_atomic_save_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "x.pt"
    atomic_torch_save({"v": torch.ones(3)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"v": Boom()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------------ clear errors
def _no_traceback(result):
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_explained(tmp_path, lfw_dir):
    first = tmp_path / "tiny"
    result = run_cli(["stn_face.cli.train", *SMOKE, "trainer.max_steps=1", "trainer.val_check_interval=1",
                      f"hydra.run.dir={first}"])
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_cli(["stn_face.cli.train", *SMOKE, "backbone=small", f"ckpt_path={first}/checkpoints/last.ckpt",
                      f"hydra.run.dir={tmp_path / 'small'}"])
    assert result.returncode == 2
    _no_traceback(result)
    assert "another architecture" in result.stderr and "backbone" in result.stderr

