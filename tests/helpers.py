"""Test helpers (no fixtures; those are in the conftest.py files): small real datasets prepared once into
the writable cache, composed configs, tiny real checkpoints of every transform family, CLI runners."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stn_face.paths import REPO_ROOT, cache_dir

LFW_TRAIN_PEOPLE = ["Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder",
                    "Hugo_Chavez", "Jean_Chretien", "John_Ashcroft", "Junichiro_Koizumi", "Tony_Blair"]


def prepare_small_lfw(lfw_dir: Path, per_identity: int = 6, people=LFW_TRAIN_PEOPLE) -> Path:
    """MTCNN crops of ``per_identity`` images of each of ``people`` (cached, resumable)."""
    from stn_face.data.prepare import prepare_collection

    files = [f"{name}/{name}_{i:04d}.jpg" for name in people for i in range(1, per_identity + 1)]
    out = cache_dir() / "prepared" / "lfw-crop128"
    # a cache, like the training data's: crops of another detector or settings are made again
    prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=2, progress=False, replace_stale=True)
    return out


def load_script(path: Path, name: str):
    """The module of a script that is not in a package (``experiments/*/*.py``), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(args: list[str], timeout: float = 600, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m <module> args`` with the test environment; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update({"NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def compose_train(overrides: list[str], output_dir: Path | None = None):
    """Compose ``train.yaml`` as the CLI would, with ``${hydra:runtime.output_dir}`` set to ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from stn_face.config import CONF_DIR

    if not any(o.lstrip("+~").startswith("model.compile") for o in overrides):
        # eager: the default compiles runs of 500+ steps (tens of seconds each); tests/nn/test_compile.py
        # covers compilation
        overrides = [*overrides, "model.compile=false"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


# ------------------------------------------------------------------ tiny trained checkpoints, View 2 crops
FAMILIES = ["identity", "similarity", "affine", "projective"]
LOCALIZATION = {"identity": "conv1_fc1", "similarity": "conv1_fc1", "affine": "conv2_fc2", "projective": "conv3_fc1",
                "tps": "conv2_fc1"}  # tps: built on demand (tests/test_export.py), not one of FAMILIES
# stored in the checkpoints' verification-callback state: `lfw` (View 2) must win over `lfw_view1`
THRESHOLD, VIEW1_THRESHOLD = 0.25, 0.75
PARAM_SPREAD = 0.05  # std of the localization parameters around their start, so every face moves differently


@functools.cache
def build_checkpoints(lfw_dir: Path, root: Path) -> dict[str, Path]:
    """``family -> last.ckpt`` of a tiny model per transform family, saved by a real Trainer."""
    import torch

    small = prepare_small_lfw(lfw_dir, per_identity=2)
    paths = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see CLI_ENV
    try:
        for family in FAMILIES:
            paths[family] = _build_one(family, root / family, small)
    finally:
        torch.set_num_threads(threads)
    return paths


def _build_one(family: str, out: Path, small: Path) -> Path:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from stn_face.checkpoint import model_config
    from stn_face.data.datamodule import FaceDataModule
    from stn_face.evaluation.callbacks import VerificationCallback

    cfg = compose_train([f"transform={family}", f"localization={LOCALIZATION[family]}", "backbone=tiny",
                         "head=arcface_small", "model.margin_warmup_steps=0", "scheduler.warmup_steps=0"], out)
    L.seed_everything(0)
    datamodule = FaceDataModule(root=str(small), identities=LFW_TRAIN_PEOPLE[:4], batch_size=8, num_workers=0,
                                max_images_per_identity=2, augment={"hflip": 0.0})
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    model.model_config = model_config(cfg)
    verification = VerificationCallback(plot=False)
    verification.best = {"lfw_view1": {"best_threshold": VIEW1_THRESHOLD, "accuracy_mean": 0.5},
                         "lfw": {"best_threshold": THRESHOLD, "accuracy_mean": 0.5}}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[verification], default_root_dir=out)
    trainer.fit(model, datamodule=datamodule)
    localization = model.transformer.localization
    if localization is not None:  # one SGD step barely moves it: make every face get its own transform
        images = torch.stack([datamodule.train_set[i][0] for i in range(len(datamodule.train_set))])
        with torch.no_grad():
            torch.nn.init.normal_(localization.head.weight)
            hidden = localization.fc(localization.features(torch.nn.functional.interpolate(
                images, size=(localization.input_size,) * 2, mode="bilinear", align_corners=False)))
            spread = (hidden @ localization.head.weight.T).std()
            localization.head.weight.mul_(PARAM_SPREAD / spread)
    path = out / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@functools.cache
def view2_subset(data_dir: Path, per_fold: int, root: Path) -> tuple[Path, list[str]]:
    """The prepared crops of the first ``per_fold`` same and different View 2 pairs of every fold, linked
    into ``root/<Name>/<Name_0001.jpg>`` (an image root of crops, nothing copied)."""
    from stn_face.data.eval_sets import first_per_fold
    from stn_face.data.prepare import prepare_collection
    from stn_face.data.protocols import read_lfw_pairs, unique_images
    from stn_face.paths import cache_dir

    names = unique_images(first_per_fold(read_lfw_pairs(data_dir / "lfw" / "pairs.txt"), per_fold))
    prepared = cache_dir() / "prepared" / "lfw-crop128"
    prepare_collection(data_dir / "lfw" / "lfw-deepfunneled", prepared, files=names, workers=2, progress=False,
                       replace_stale=True)
    from stn_face.data.prepare import crop_path_map

    crops = crop_path_map(prepared)
    for name in names:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(crops[name])
    return root, names


def real_crops(names: list[str], root: Path, count: int) -> list[np.ndarray]:
    from stn_face.data.images import read_rgb

    return [read_rgb(root / name) for name in names[:count]]


def compose_cli(config_name: str, overrides: list[str]):
    """A CLI's config as its command line would compose it (no Hydra runtime: pass output paths)."""
    from hydra import compose, initialize_config_dir

    from stn_face.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def expect_input_error(capsys, function, *args) -> str:
    """Run ``function(*args)`` under ``friendly_errors``: it must exit 2 with one ``error:`` line."""
    from stn_face.errors import friendly_errors

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info, friendly_errors():
        function(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


# These tests run many tiny batches: one thread avoids OpenMP hand-off costs that dominate on a busy 2-core
# machine (measured: a 5-image forward pass 1.2 s with 2 threads under load, 0.09 s with one).
CLI_ENV = {"OMP_NUM_THREADS": "1"}
