"""What every benchmark section shares: configs composed as the CLI composes them, data, clocks, budget.

The model, the data and the trainer settings are all read from ``conf/`` (``train.yaml`` composed with
Hydra's compose API), so a benchmark measures what ``stn-face-train`` would build, not a look-alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import statistics
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch

from stn_face.machine import cpu_flags, cpu_model
from stn_face.paths import cache_dir

#: the repository root: benchmarks live in a source checkout, beside stn_face/
REPO_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ helpers
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def quiet() -> None:
    import lightning.pytorch  # noqa: F401 - it sets its loggers' levels on import; override them after

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torch._inductor", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Budget:
    """Wall-clock budget of the whole run: rounds are dropped, then sections skipped, when it runs out."""

    def __init__(self, minutes: float) -> None:
        self.start = time.perf_counter()
        self.total = minutes * 60.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()

    def reserved(self, fraction: float) -> bool:
        """True once less than ``fraction`` of the budget is left (kept for the sections still to come)."""
        return self.left() < fraction * self.total


def shrink_defaults(args, parser, small: dict[str, Any]) -> None:
    """Set each option of ``small`` that the user left at ``parser``'s default to the small value
    (``--quick``, ``--dry-run``: tiny sizes, but an explicit flag still wins)."""
    for key, value in small.items():
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


def safe_host() -> str:
    """The host name as a file-name part."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname()) or "host"


def default_output(date: str, suffix: str = "") -> Path:
    """``<paths.log_dir>/bench/<date>-<host><suffix>.json``: a run folder, never the source tree."""
    return Path(str(compose([]).paths.log_dir)) / "bench" / f"{date}-{safe_host()}{suffix}.json"


# ------------------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
    import lightning

    flags = cpu_flags()
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": {k: k in flags for k in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_trainer_precision": trainer_precision("auto"),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------------------ configs
def compose(overrides: Sequence[str], config_name: str = "train"):
    """``train.yaml`` (or ``config_name``) composed as ``stn-face-train`` (``stn-face-eval`` with
    ``evaluate``) would; parts are instantiated from it as needed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stn_face.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def model_overrides(
    backbone: str, transform: str = "projective", channels_last: bool = False, compile: bool = False
) -> list[str]:
    # margin switched on from the first step (the steady state of a long run); a long cosine schedule
    return [
        f"backbone={backbone}",
        f"transform={transform}",
        "model.margin_warmup_steps=0",
        "trainer.max_steps=1000000",
        f"model.channels_last={str(channels_last).lower()}",
        f"model.compile={str(compile).lower()}",
        "logger=none",
    ]


def build_model(overrides: Sequence[str], num_classes: int):
    """A :class:`StnFaceModule` built from ``conf/model`` with ``overrides``, and the composed config."""
    from hydra.utils import instantiate

    cfg = compose(overrides)
    return instantiate(cfg.model, num_classes=num_classes), cfg


class TimedNetwork(torch.nn.Module):
    """The embedder's network, with the seconds spent inside its calls added up in ``seconds``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seconds = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return self.net(images)
        finally:
            self.seconds += time.perf_counter() - start


def trainer_precision(precision: str, trainer: str = "cpu") -> str:
    """``precision``, or for ``auto`` the precision ``conf/trainer/<trainer>`` chooses on this machine."""
    return str(compose([f"trainer={trainer}"]).trainer.precision) if precision == "auto" else precision


def autocast(precision: str, device_type: str = "cpu"):
    """The autocast Lightning's ``precision`` uses (``bf16-mixed``, ``16-mixed``), or nothing."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- data
def synthetic_crops(folder: Path, identities: int = 24, per_identity: int = 6, size: int = 128) -> Path:
    """Random-texture 128x128 JPEGs laid out as ``<identity>/<image>.jpg`` (when no real crops exist)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(identities):
        sub = folder / f"person_{i:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
            image = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(sub / f"img_{j:03d}.jpg"), image)
    return folder


def resolve_crops(root: str | None, tmp: Path) -> tuple[Path, str]:
    """The crop folder to read: ``root``, else the prepared LFW crops in the cache, else synthetic JPEGs."""
    if root:
        path = Path(root)
        if not path.is_dir():
            raise FileNotFoundError(f"--lfw-root {root} is not a folder")
        return path, str(path)
    default = cache_dir() / "prepared" / "lfw-crop128"
    if default.is_dir() and sum(1 for _ in zip(range(50), default.glob("*/*.jpg"))) >= 50:
        return default, str(default)
    logging.getLogger(__name__).warning(
        "no prepared LFW crops at %s (run stn-face-train experiment=smoke or "
        "stn-face-prepare first); using synthetic JPEGs",
        default,
    )
    return synthetic_crops(tmp / "synthetic-crops"), "synthetic"


def data_config(root: Path, batch_size: int, num_workers: int):
    """``conf/data/folder.yaml`` (prepared crops in ``<root>/<identity>/<image>``) with the benchmark's
    batch size and worker count: the image size, identity filter and augmentation are training's."""
    return compose(
        [
            "data=folder",
            f"data.root={root}",
            f"data.batch_size={batch_size}",
            f"data.num_workers={num_workers}",
        ]
    ).data


def datamodule(root: Path, batch_size: int, num_workers: int):
    from hydra.utils import instantiate

    dm = instantiate(data_config(root, batch_size, num_workers))
    dm.setup("fit")
    return dm


def preload(loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    while len(batches) < count:
        for images, labels in loader:
            batches.append((images.contiguous(), labels))
            if len(batches) == count:
                break
    return batches


# ------------------------------------------------------------------------------------------- clocks
def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of other live processes (DataLoader workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def loader_worker_pids(iterator) -> list[int]:
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid]
