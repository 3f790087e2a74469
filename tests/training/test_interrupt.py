"""A signal is a checkpoint: SIGINT or SIGTERM at a random step of a real ``stn-face-train`` run (one process,
and two processes on ``trainer=ddp_cpu`` with the sharded Partial FC head) finishes that step, leaves a
``last.ckpt`` of it (the whole head in it), says the resume command, exits 128 + signal, and the resumed
run ends with the weights of the uninterrupted one. Plus the handler logic itself, without training."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stn_face.paths import REPO_ROOT
from stn_face.training.interrupt import InterruptCheckpoint, RunInterrupted, signal_number
from tests.helpers import run_cli

STEPS = 8
BASE = ["stn_face.cli.train", "experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0",
        f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={STEPS}", "trainer.log_every_n_steps=1",
        "+logger.csv.flush_logs_every_n_steps=1", "seed=7",
        # no periodic checkpoint before the end: a last.ckpt before it can only come from the signal
        "callbacks.periodic_checkpoint.every_n_train_steps=1000"]
TRAINERS = {
    "cpu": [],
    # the sharded head: a checkpoint must gather every rank's rows
    "ddp_cpu": ["trainer=ddp_cpu", "head=partial_fc", "head.sample_rate=0.5"],
}


def _args(trainer: str) -> list[str]:
    return [*BASE, *TRAINERS[trainer]]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _steps_logged(run: Path) -> int:
    metrics = run / "csv" / "version_0" / "metrics.csv"
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    if not lines:
        return 0
    column = lines[0].split(",").index("train/loss") if "train/loss" in lines[0] else None
    return sum(1 for line in lines[1:] if column is not None and line.split(",")[column])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of each trainer (started with ``ckpt_path=last`` in an empty folder: it says
    so and starts at step 0)."""
    runs: dict[str, tuple[Path, str]] = {}

    def run(trainer: str) -> tuple[Path, str]:
        if trainer not in runs:
            folder = tmp_path_factory.mktemp(f"straight-{trainer}")
            result = run_cli([*_args(trainer), "ckpt_path=last", f"hydra.run.dir={folder}"], timeout=900)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[trainer] = folder, result.stdout + result.stderr
        return runs[trainer]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(("trainer", "signum"), [("cpu", signal.SIGINT), ("cpu", signal.SIGTERM),
                                                  ("ddp_cpu", signal.SIGINT), ("ddp_cpu", signal.SIGTERM)])
def test_a_signal_at_a_random_step_is_a_checkpoint_and_the_resumed_run_ends_as_the_uninterrupted_one(
        trainer, signum, straight, tmp_path):
    straight_run, straight_output = straight(trainer)
    assert f"no checkpoint in {straight_run / 'checkpoints'}: starting at step 0" in straight_output

    after = random.randint(1, 4)  # the signal comes once this many steps are done
    run = tmp_path / "stopped"
    log_file = tmp_path / "stopped.log"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log:
        # a session of its own: SIGINT goes to the whole process group, as a terminal's Ctrl-C does; SIGTERM
        # only to the first process, as `kill` or `timeout` do (under DDP the ranks then agree on the stop)
        process = subprocess.Popen([sys.executable, "-m", *_args(trainer), f"hydra.run.dir={run}"], cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 900
        while _steps_logged(run) < after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, log_file.read_text()[-3000:]
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        code = process.wait(timeout=600)
    output = log_file.read_text()
    assert code == 128 + signum, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    found = re.search(rf"stopped by {signal.Signals(signum).name} at step (\d+): (\S+) holds step (\d+)", output)
    assert found, output[-3000:]
    step = int(found.group(1))
    assert after <= step < STEPS, f"signal after step {after}, stopped at {step}"
    at_stop = _checkpoint(run)
    assert at_stop["global_step"] == step == int(found.group(3)) and found.group(2) == str(run / "checkpoints" /
                                                                                           "last.ckpt")
    if trainer == "ddp_cpu":
        assert at_stop["state_dict"]["head.weight"].shape == (20, 128)  # both ranks' shards are in the file
    assert f"ckpt_path=last hydra.run.dir={run}" in output.split("Resume with:")[1]
    assert not (run / "metrics.json").exists()  # stopped before validation: nothing scored, nothing claimed

    result = run_cli([*_args(trainer), "ckpt_path=last", f"hydra.run.dir={run}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from step {step} of {run / 'checkpoints' / 'last.ckpt'}" in result.stdout + result.stderr
    # one last.ckpt, written on by the resumed run (no last-v1.ckpt beside the signal's)
    assert sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    a, b = _checkpoint(straight_run), _checkpoint(run)
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    worst = max(float((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max())
                for k in a["state_dict"] if a["state_dict"][k].is_floating_point() and a["state_dict"][k].numel())
    assert worst < 1e-6, f"resumed weights differ by {worst} (stopped at step {step})"
    assert any(not torch.equal(at_stop["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])


# ----------------------------------------------------------------------------------- without training
class _Strategy:
    root_device = torch.device("cpu")


class _Trainer:
    """What the callback uses of a trainer."""

    world_size, is_global_zero, global_step, ckpt_path = 1, True, 5, None
    strategy = _Strategy()

    def __init__(self) -> None:
        self.saved: list[Path] = []

    def save_checkpoint(self, path, weights_only=None) -> None:
        self.saved.append(Path(path))


def test_signal_names_numbers_and_an_unknown_one():
    assert signal_number("SIGUSR1") == signal_number("usr1") == signal_number(int(signal.SIGUSR1)) == signal.SIGUSR1
    assert signal_number("15") == signal.SIGTERM
    from stn_face.errors import InputError

    with pytest.raises(InputError, match="unknown signal 'SIGNOPE'"):
        signal_number("SIGNOPE")


def test_the_handlers_only_flag_and_the_step_end_saves_reports_and_exits(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["stn-face-train", "experiment=smoke"])
    callback = InterruptCheckpoint(tmp_path / "checkpoints", preemption_signal="SIGUSR1")
    assert callback.signals == sorted([signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
    before = {s: signal.getsignal(s) for s in callback.signals}
    trainer = _Trainer()
    callback.on_train_start(trainer, None)
    try:
        assert all(signal.getsignal(s) == callback._handle for s in callback.signals)
        callback.on_train_batch_end(trainer, None, None, None, 0)  # no signal: nothing happens
        assert trainer.saved == []
        os.kill(os.getpid(), signal.SIGUSR1)  # the pre-emption signal: a flag, not an exit
        time.sleep(0.05)
        assert callback.received == signal.SIGUSR1
        with pytest.raises(RunInterrupted) as stop:
            callback.on_train_batch_end(trainer, None, None, None, 0)
    finally:
        callback.restore()
    assert stop.value.code == 128 + signal.SIGUSR1 and stop.value.step == 5
    assert trainer.saved == [tmp_path / "checkpoints" / "last.ckpt"]
    err = capsys.readouterr().err
    assert "SIGUSR1 received: finishing the current step" in err
    assert f"stopped by SIGUSR1 at step 5: {tmp_path / 'checkpoints' / 'last.ckpt'} holds step 5" in err
    assert f"stn-face-train experiment=smoke ckpt_path=last hydra.run.dir={tmp_path}" in err
    assert {s: signal.getsignal(s) for s in callback.signals} == before  # the handlers are given back


def test_a_second_ctrl_c_stops_at_once_and_no_preemption_signal_leaves_it_alone(tmp_path):
    callback = InterruptCheckpoint(tmp_path, preemption_signal=None)
    assert signal.SIGUSR1 not in callback.signals
    callback._handle(signal.SIGINT, None)
    with pytest.raises(RunInterrupted) as stop:
        callback._handle(signal.SIGINT, None)
    assert stop.value.code == 130 and stop.value.checkpoint is None


def test_a_signal_while_only_evaluating_stops_at_once_with_its_exit_code(tmp_path, capsys):
    """train=false (trainer.validate): nothing to save, and no exit 0 as with Lightning's own SIGTERM handler."""
    from types import SimpleNamespace

    callback = InterruptCheckpoint(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    trainer = _Trainer()
    trainer.state = SimpleNamespace(fn="fit")
    callback.on_validation_start(trainer, None)  # the validation inside fit keeps the step-end flag
    assert signal.getsignal(signal.SIGTERM) == before
    trainer.state = SimpleNamespace(fn="validate")
    callback.on_validation_start(trainer, None)
    try:
        with pytest.raises(RunInterrupted) as stop:
            callback._handle(signal.SIGTERM, None)
    finally:
        callback.on_validation_end(trainer, None)
    assert stop.value.code == 143
    assert "stopped by SIGTERM during evaluation: nothing to save" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_preemption_signal_can_requeue_the_slurm_job(tmp_path, monkeypatch, capsys):
    import subprocess as sp

    calls = []
    monkeypatch.setattr(sp, "run", lambda args, **kw: calls.append(args) or sp.CompletedProcess(args, 0, "", ""))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    callback = InterruptCheckpoint(tmp_path / "checkpoints", requeue=True)
    for signum, requeued in ((signal.SIGTERM, []), (signal.SIGUSR1, [["scontrol", "requeue", "4242"]])):
        calls.clear()
        callback.received = signum
        with pytest.raises(RunInterrupted):
            callback.on_train_batch_end(_Trainer(), None, None, None, 0)
        assert calls == requeued  # only the pre-emption signal requeues; Ctrl-C and SIGTERM just stop
    assert "requeued Slurm job 4242" in capsys.readouterr().err
    monkeypatch.delenv("SLURM_JOB_ID")
    from stn_face.training.interrupt import requeue_slurm_job

    assert requeue_slurm_job() is False and "not a Slurm job" in capsys.readouterr().err
