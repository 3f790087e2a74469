"""Paper Table 2 as the paper ran it: a localization net regressing the detector's 5 facial landmarks.

Composes ``conf/landmark_regression.yaml`` (any ``localization=`` and ``data=`` option), prepares the
data's crops with the project's MTCNN preparation (cached), reads the landmarks of every detected
crop from its ``manifest.csv``, holds out a fraction of the identities, trains
:class:`stn_face.nn.landmark_regression.LandmarkRegressor` with an MSE loss and writes a JSON with
the held-out MSE (unit and grid coordinates), the mean-shape baseline, times, seed, machine and the
command::

    python experiments/paper_table2/regress.py localization=conv2_fc2 seed=43
    python experiments/paper_table2/regress.py regression.results_file=out.json regression.epochs=1

``run.sh`` runs the five Table 2 settings x 3 seeds one at a time; ``table.py`` makes the table.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stn_face.config import CONF_DIR
from stn_face.data.augment import eval_transform
from stn_face.data.images import read_rgb
from stn_face.data.prepare import MANIFEST_NAME, parse_numbers, read_manifest
from stn_face.data.prepare.crop import points_in_face_crop
from stn_face.errors import InputError, friendly_errors
from stn_face.geometry import resize_antialiased

sys.path.insert(0, str(Path(__file__).resolve().parent))  # landmark_fit.py beside this script, however it is run
from landmark_fit import COORDINATES, fit, landmark_mse, mse_in, predict, unit_to

log = logging.getLogger("paper_table2.regress")
# written by the preparation beside manifest.csv; records the detector that found the landmarks
PREPARE_SETTINGS = "prepare_settings.json"
_LOADED: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}


def load_crops(root: Path, statuses: list[str], margin: float, image_size: int, input_size: int
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The crops of the manifest rows with one of ``statuses`` and 5 landmarks as the localization
    net's input (``eval_transform`` as in training: resized to ``image_size``, normalised to [-1, 1];
    then resized with antialiasing to ``input_size``, as the net would resize every batch), their
    landmarks in unit coordinates and their identities.
    Shapes: ``(N, 3, input_size, input_size)``, ``(N, 5, 2)``, ``N`` names.

    Kept in memory for the next call with the same arguments and manifest rows, so the jobs of one
    ``-m`` sweep decode the crops once.
    """
    manifest = root / MANIFEST_NAME
    rows = [r for r in read_manifest(root) if r["status"] in statuses and r["output"] and r["landmarks"]]
    if not rows:
        raise InputError(f"{manifest} has no rows with status {', '.join(statuses)} and landmarks; "
                         "prepare the crops first (stn-face-prepare) or choose another data= option")
    # keyed by the rows' content: every preparation run rewrites the manifest, even with nothing to do
    key = (str(root), hash(tuple((r["output"], r["box"], r["landmarks"]) for r in rows)), margin, image_size,
           input_size)
    if key in _LOADED:
        return _LOADED[key]
    transform = eval_transform(image_size)
    images, points = [], []
    for row in rows:
        image = transform(image=read_rgb(root / row["output"]))["image"]
        images.append(resize_antialiased(image, (input_size, input_size)))
        box = np.array(parse_numbers(row["box"]))
        landmarks = np.array(parse_numbers(row["landmarks"])).reshape(5, 2)
        points.append(points_in_face_crop(box, landmarks, margin))
    _LOADED.clear()
    _LOADED[key] = (torch.stack(images), torch.as_tensor(np.stack(points), dtype=torch.float32),
                    [r["identity"] for r in rows])
    return _LOADED[key]


def split_by_identity(identities: list[str], held_out_fraction: float, split_seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Indices of the training and held-out images, holding out ``held_out_fraction`` of the
    identities (drawn with ``split_seed``); also returns the held-out identity count."""
    names = sorted(set(identities))
    held = max(1, round(held_out_fraction * len(names)))
    if not 0 < held_out_fraction < 1 or held >= len(names):
        raise InputError(f"regression.held_out_fraction={held_out_fraction} must leave identities on both sides "
                         f"of the split ({len(names)} identities); use a value such as 0.2")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(split_seed))
    held_names = {names[i] for i in order[:held].tolist()}
    is_held = torch.tensor([name in held_names for name in identities])
    return torch.nonzero(~is_held).flatten(), torch.nonzero(is_held).flatten(), held


def machine() -> dict[str, Any]:
    """CPU model, cores, vector ISA, torch build and load: what every timing here is measured on.
    (``benchmarks.common.machine_info`` composes the train config, which fails inside a Hydra app.)"""
    from stn_face.machine import cpu_flags, cpu_model

    flags = cpu_flags()
    return {"cpu": cpu_model(), "host": socket.gethostname(), "logical_cpus": os.cpu_count(),
            "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "load_average": list(os.getloadavg())}


def _choice(group: str) -> str | None:
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _command() -> str:
    """The command line of this run (one job of a sweep: that job's overrides), quoted for a shell."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    return " ".join(["python experiments/paper_table2/regress.py", *map(shlex.quote, overrides)])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Prepare, load, split, train, evaluate; write and return the results."""
    reg = cfg.regression
    out = Path(reg.results_file)
    if reg.skip_existing and out.is_file():
        log.info("%s exists: not run again (regression.skip_existing=false redoes it)", out)
        return json.loads(out.read_text())
    if reg.coordinates not in COORDINATES:
        raise InputError(f"regression.coordinates={reg.coordinates} is unknown; use one of {', '.join(COORDINATES)}")
    if cfg.data.crop.mode != "crop":
        raise InputError(f"data.crop.mode={cfg.data.crop.mode}: landmark regression needs the detector's crops "
                         "(data.crop.mode=crop); landmark-aligned crops put every face on one template")
    torch.set_num_threads(int(reg.threads))
    datamodule = instantiate(cfg.data)
    if reg.prepare:
        datamodule.prepare_data()
    started = time.perf_counter()
    images, unit, identities = load_crops(Path(datamodule.root), list(reg.statuses), float(cfg.data.crop.margin),
                                          int(cfg.data.image_size), int(cfg.localization.input_size))
    data_time = time.perf_counter() - started
    targets = unit_to(unit, reg.coordinates)
    train_idx, test_idx, held_identities = split_by_identity(identities, float(reg.held_out_fraction),
                                                             int(reg.split_seed))
    x_train, y_train, x_test, y_test = images[train_idx], targets[train_idx], images[test_idx], targets[test_idx]
    mean_shape = y_train.mean(dim=0)
    baseline = float(landmark_mse(mean_shape.expand_as(y_test), y_test))

    torch.manual_seed(int(cfg.seed))
    # objects passed after instantiation: Hydra would turn them into configs
    model = instantiate(reg.model)(localization=instantiate(cfg.localization), init_landmarks=mean_shape)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    steps = int(reg.steps)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps)
    curve: list[dict[str, float]] = []
    losses: list[float] = []
    eval_wall = eval_cpu = 0.0

    def held_out_mse() -> float:
        return float(landmark_mse(predict(model, x_test, int(reg.eval_batch_size)), y_test))

    def on_step(step: int, loss: float) -> None:
        nonlocal eval_wall, eval_cpu
        losses.append(loss)
        if reg.eval_every and step % int(reg.eval_every) == 0 and step < steps:
            wall, cpu = time.perf_counter(), time.process_time()
            curve.append({"step": step, "train_batch_mse": loss, "held_out_mse": held_out_mse()})
            eval_wall += time.perf_counter() - wall
            eval_cpu += time.process_time() - cpu
            log.info("step %d/%d: batch MSE %.6f, held-out MSE %.6f", step, steps, loss, curve[-1]["held_out_mse"])

    wall, cpu = time.perf_counter(), time.process_time()
    fit(model, optimizer, x_train, y_train, steps=steps, batch_size=int(reg.batch_size),
        generator=torch.Generator().manual_seed(int(cfg.seed)), scheduler=scheduler, on_step=on_step)
    train_wall, train_cpu = time.perf_counter() - wall - eval_wall, time.process_time() - cpu - eval_cpu
    final = held_out_mse()
    curve.append({"step": steps, "held_out_mse": final})
    # training-mode batch losses, so the gap to the held-out MSE mixes BatchNorm modes and identities
    last = losses[-int(reg.last_steps_averaged):]

    settings_file = Path(datamodule.root) / PREPARE_SETTINGS
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    results = {
        "experiment": "paper Table 2: localization net regressing the detector's 5 landmarks (MSE)",
        "localization": _choice("localization"),
        "localization_config": OmegaConf.to_container(cfg.localization, resolve=True),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": int(cfg.seed),
        "coordinates_trained": reg.coordinates,
        "held_out_mse": {c: mse_in(final, reg.coordinates, c) for c in COORDINATES},
        "mean_shape_baseline_mse": {c: mse_in(baseline, reg.coordinates, c) for c in COORDINATES},
        "train_batch_mse_last_steps": {c: mse_in(float(np.mean(last)), reg.coordinates, c) for c in COORDINATES},
        "held_out_rmse_crop_pixels": float(np.sqrt(mse_in(final, reg.coordinates, "unit"))) * int(cfg.data.crop.size),
        "curve": curve,
        "steps": steps,
        "epochs": round(steps * int(reg.batch_size) / len(train_idx), 2),
        "batch_size": int(reg.batch_size),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True),
        "data": {
            "name": _choice("data") or str(cfg.data.get("name")),
            "root": str(datamodule.root),
            "crop": OmegaConf.to_container(cfg.data.crop, resolve=True),
            "detector": settings.get("detector"),
            "statuses": list(reg.statuses),
            "images": len(identities),
            "train_images": len(train_idx),
            "held_out_images": len(test_idx),
            "identities": len(set(identities)),
            "held_out_identities": held_identities,
            "split_seed": int(reg.split_seed),
        },
        "train_time_s": round(train_wall, 2),
        "train_cpu_time_s": round(train_cpu, 2),
        "eval_time_s": round(eval_wall, 2),
        "data_load_time_s": round(data_time, 2),
        "threads": int(reg.threads),
        "machine": machine(),
        "command": _command(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("%s seed %d: held-out MSE %.6f (%s), mean-shape baseline %.6f, %.0f s training; wrote %s",
             results["localization"], results["seed"], final, reg.coordinates, baseline, train_wall, out)
    return results


@hydra.main(config_path=CONF_DIR, config_name="landmark_regression", version_base=None)
def main(cfg: DictConfig) -> None:
    with friendly_errors():
        run(cfg)


if __name__ == "__main__":
    main()
