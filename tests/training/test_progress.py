"""What a run says about itself: the run folder at the start, the resume command after Ctrl-C."""

from __future__ import annotations

import logging
from pathlib import Path

from stn_face.training.progress import announce_run, report_interrupt


def test_announce_names_the_folder_and_the_configured_checkpoint_interval(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="stn_face.train"):
        announce_run(tmp_path, 3000, fitting=True, checkpoint_every=500, loggers=["wandb", "csv"])
        announce_run(tmp_path / "b", 10, fitting=True, checkpoint_every=None)
    first, second = (r.getMessage() for r in caplog.records)
    assert f"run folder: {tmp_path} (3000 optimiser steps)" in first
    assert "checkpoints/last.ckpt       every 500 steps and at the end (resume: ckpt_path=last)" in first
    assert "checkpoints/last.ckpt       at the end (resume" in second
    assert "csv/version_0/metrics.csv" in first and "wandb sync" in first
    assert "csv/" not in second and "wandb" not in second  # no loggers configured: none promised


def test_interrupt_says_what_was_kept_and_how_to_resume(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["stn-face-train", "experiment=smoke", "seed=3"])
    report_interrupt(tmp_path, 57, checkpoint_every=250)
    err = capsys.readouterr().err
    assert "interrupted at step 57: no checkpoint was written yet (one is written every 250 steps and at the end)" in err
    assert f"stn-face-train experiment=smoke seed=3 ckpt_path=last hydra.run.dir={tmp_path}" in err
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    report_interrupt(tmp_path, 300, checkpoint_every=250)
    assert f"{tmp_path / 'checkpoints' / 'last.ckpt'} holds the latest periodic checkpoint" in capsys.readouterr().err
