"""DDP with a bounded collective timeout: a crashed rank ends every rank instead of a hang."""

from __future__ import annotations

import time

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # subprocess commands, DDP, sweeps, kill-and-resume

SMOKE = ["experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0"]


def test_ddp_rank_failure_ends_every_rank(lfw_dir, tmp_path):
    """A crash on rank 1 ends the whole 2-process run with the error, well within the DDP timeout."""
    start = time.monotonic()
    result = run_cli(["stn_face.cli.train", *SMOKE, "trainer=ddp_cpu", "trainer.max_steps=6",
                      "trainer.val_check_interval=6", "+callbacks.fault._target_=tests.faults.RaiseOnRank",
                      f"hydra.run.dir={tmp_path}"], timeout=400)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "injected fault on rank 1" in result.stderr
    assert elapsed < 300, f"took {elapsed:.0f}s"

