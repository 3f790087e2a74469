"""Reliability: exact resume after a kill, atomic checkpoints, numerical safety, clear errors, DDP faults."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from stn_face.checkpoint import atomic_torch_save
from stn_face.geometry import decompose, get_transform, warp
from stn_face.paths import REPO_ROOT
from tests.helpers import run_cli
from tests.test_configs import compose_train

SMOKE = ["experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0"]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8
    return checkpoint["state_dict"]


def test_killed_run_resumes_exactly(lfw_dir, tmp_path):
    """8 steps straight vs. killed (SIGKILL) after the step-4 checkpoint and resumed with ckpt_path=last."""
    args = ["stn_face.cli.train", *SMOKE, "trainer.max_steps=8", "trainer.val_check_interval=8",
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


FAMILIES = ["similarity", "affine", "projective"]
extreme = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(FAMILIES), data=st.data())
def test_extreme_parameters_never_give_nan_or_inf(name, data):
    family = get_transform(name)
    params = torch.tensor([data.draw(st.lists(extreme, min_size=family.num_params, max_size=family.num_params))])
    matrix = family.matrix(params)
    images = torch.rand(1, 3, 16, 16)
    out = warp(images, matrix, (12, 12))
    assert torch.isfinite(out).all()
    assert out.abs().max() <= images.abs().max() + 1e-5  # bilinear sampling never amplifies
    stats = decompose(matrix.double())
    assert all(torch.isfinite(v).all() or k in ("scale", "scale_x") for k, v in stats.items())


@settings(max_examples=40, deadline=None)
@given(theta31=st.floats(-50, 50), theta32=st.floats(-50, 50))
def test_projective_denominator_guard(theta31, theta32):
    """Any perspective terms, including ones that put z = 0 inside the image, give finite gradients."""
    params = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, theta31, theta32]], requires_grad=True)
    out = warp(torch.rand(1, 1, 9, 9), get_transform("projective").matrix(params), (9, 9))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(params.grad).all()


# ------------------------------------------------------------------------------------ clear errors
def _no_traceback(result):
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_unknown_config_option_lists_valid_ones():
    result = run_cli(["stn_face.cli.train", "transform=homography"])
    assert result.returncode == 2  # the exit code of every input error
    _no_traceback(result)
    for name in ("identity", "similarity", "affine", "projective"):
        assert name in result.stderr


def test_missing_data_folder_names_path_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli(["stn_face.cli.train", *SMOKE], env={"STN_FACE_DATA": str(missing)})
    assert result.returncode == 2
    _no_traceback(result)
    assert str(missing) in result.stderr and "stn-face-data" in result.stderr


def test_empty_training_folder_is_explained(tmp_path, lfw_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(["stn_face.cli.train", *SMOKE, "data=folder", f"data.root={empty}"])
    assert result.returncode == 2
    _no_traceback(result)
    assert str(empty) in result.stderr and "stn-face-prepare" in result.stderr


def test_pair_file_with_missing_images_says_how_many_and_which(tmp_path, lfw_dir):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nAaron_Peirsol\t1\t2\nNo_Such_Person\t1\t3\nAaron_Peirsol\t1\tAbel_Pacheco\t1\n"
                     "Nobody_Else\t4\tAaron_Peirsol\t2\n")
    result = run_cli(["stn_face.cli.train", *SMOKE, f"eval.pairs_file={pairs}"])
    assert result.returncode == 2
    _no_traceback(result)
    assert "No_Such_Person" in result.stderr and "2" in result.stderr


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


def test_folder_data_without_or_with_a_missing_root_is_one_line_with_the_fix(tmp_path):
    result = run_cli(["stn_face.cli.train", *SMOKE, "data=folder"])
    assert result.returncode == 2
    _no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.root=" in errors[0] and "conf/data/folder.yaml" in errors[0]
    missing = tmp_path / "nope"
    result = run_cli(["stn_face.cli.train", *SMOKE, "data=folder", f"data.root={missing}"])
    assert result.returncode == 2
    _no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert "data.root=DIR" in errors[0] and "stn-face-prepare" in errors[0]
    assert "prepare lfw" not in result.stderr  # nothing was prepared before the error


def test_unset_data_root_names_the_variable_the_default_and_the_download(tmp_path):
    env = {"STN_FACE_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_cli(["stn_face.cli.eval", "embeddings=x.npz", "eval=lfw"], env=env)
    assert result.returncode == 2
    _no_traceback(result)
    assert "STN_FACE_DATA" in result.stderr and "stn-face-data" in result.stderr
    assert str(tmp_path / "cache" / "stn_face" / "data") in result.stderr
    assert "eval.pairs=" not in result.stderr  # not the fix when the data root itself is missing
