"""What a run says about itself: the run folder at the start, the resume command after Ctrl-C."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stn_face.errors import InputError
from stn_face.training.progress import (
    announce_run,
    no_checkpoint_to_resume,
    quiet_library_logs,
    report_interrupt,
    report_result,
)


def test_announce_names_the_folder_and_the_configured_checkpoint_interval(tmp_path: Path, caplog,
                                                                        monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["stn-face-train", "experiment=smoke"])
    with caplog.at_level(logging.INFO, logger="stn_face.train"):
        announce_run(tmp_path, 3000, fitting=True, checkpoint_every=500, loggers=["wandb", "csv"])
        announce_run(tmp_path / "b", 10, fitting=True, checkpoint_every=None)
    first, second = (r.getMessage() for r in caplog.records)
    assert f"run folder: {tmp_path} (3000 optimiser steps)" in first
    assert "checkpoints/last.ckpt       every 500 steps and at the end; also on Ctrl-C or SIGTERM" in first
    assert "checkpoints/last.ckpt       at the end; also on Ctrl-C" in second
    # the whole resume command, run folder included
    assert first.splitlines()[-1] == f"resume: stn-face-train experiment=smoke ckpt_path=last hydra.run.dir={tmp_path}"
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


def test_resume_without_a_checkpoint_says_so_or_is_an_error_when_required(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="stn_face.train"):
        no_checkpoint_to_resume(tmp_path / "checkpoints")
    assert caplog.records[-1].getMessage() == f"no checkpoint in {tmp_path / 'checkpoints'}: starting at step 0"
    with pytest.raises(InputError, match=r"resume_required=true but there is no checkpoint in .*hydra\.run\.dir="):
        no_checkpoint_to_resume(tmp_path / "checkpoints", required=True)


def test_the_run_ends_with_its_numbers_its_duration_and_its_folder(tmp_path: Path, caplog) -> None:
    record = {"eval": "lfw_view1", "accuracy_mean": 0.6333, "accuracy_std": 0.05, "auc": 0.70125, "n_pairs": 60,
              "global_step": 30, "sets": {"lfw_view1": {"accuracy_mean": 0.6333}, "ytf": {"accuracy_mean": 0.5}}}
    with caplog.at_level(logging.INFO, logger="stn_face.train"):
        report_result(record, tmp_path / "metrics.json", 83.4)
        report_result({"global_step": 3, "sets": {}}, tmp_path / "metrics.json", 3725)
    first, second = (r.getMessage() for r in caplog.records)
    assert first == (f"lfw_view1: accuracy 63.33 % ± 5.00, AUC 0.7013 on 60 pairs at step 30; also ytf 50.00 %\n"
                     f"done in 1 min 23 s; run folder {tmp_path} (metrics: metrics.json)")
    assert second.startswith("no verification set was scored (step 3)\ndone in 1 h 2 min")


def test_lightning_lines_once_and_without_its_tips(capsys) -> None:
    import lightning  # noqa: F401 - its console handler is what goes

    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)  # what Hydra's job logging sets up
    lightning_log = logging.getLogger("lightning")
    own = [h for h in lightning_log.handlers if type(h) is logging.StreamHandler]
    try:
        quiet_library_logs()
        assert not [h for h in lightning_log.handlers if type(h) is logging.StreamHandler]
        tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        with_tip = tips.makeRecord(tips.name, logging.INFO, __file__, 1, "💡 Tip: try installing litlogger", (), None)
        plain = tips.makeRecord(tips.name, logging.INFO, __file__, 1, "GPU available: False", (), None)
        assert not tips.filter(with_tip) and tips.filter(plain)
    finally:
        root.removeHandler(handler)
        for h in own:
            lightning_log.addHandler(h)
