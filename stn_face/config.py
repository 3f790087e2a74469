"""Hydra/OmegaConf glue: config resolvers and friendly errors for config mistakes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# In a wheel the configs ship inside the package (stn_face/conf); in a source checkout they are the
# top-level conf/ folder.
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = str(_PACKAGED_CONF if _PACKAGED_CONF.is_dir() else Path(__file__).resolve().parent.parent / "conf")


def _data_dir() -> str:
    from stn_face.paths import DATA_ENV, data_root, default_data_dir

    value = os.environ.get(DATA_ENV)
    if value:
        return str(Path(value).expanduser().resolve())
    root = data_root(required=False)
    # Unset is not an error until a data path is actually used; the loaders then name the variable.
    return str(root) if root is not None else f"<{DATA_ENV} is not set and {default_data_dir()} does not exist>"


def _cache_dir() -> str:
    from stn_face.paths import cache_dir

    return str(cache_dir())


def cpu_supports_fast_bf16() -> bool:
    """True when the CPU has AMX matrix units for bf16 (``amx_bf16``). Without native bf16 PyTorch emulates
    bf16 convolutions and bf16 autocast runs several times slower than fp32 (measured on an AVX2-only
    EPYC: 8.4 s vs 2.3 s for a training step); with AVX512-BF16 dot products alone it is still slower for
    the main job (measured on a 2-core Intel Xeon with AVX512-BF16 and no AMX, 2026-12-05: 0.92x fp32's
    images/s, eager and compiled; ``make bench``, section ``precision``)."""
    from stn_face.machine import cpu_flags

    return "amx_bf16" in cpu_flags()


def _cpu_precision() -> str:
    return "bf16-mixed" if cpu_supports_fast_bf16() else "32-true"


def _auto_compile(max_steps: Any = None) -> bool:
    from stn_face.nn.compile import auto_compile

    return auto_compile(max_steps)


def register_resolvers() -> None:
    """``${stn_face.data_dir:}`` is ``$STN_FACE_DATA`` made absolute; ``${stn_face.cache_dir:}`` a writable cache;
    ``${stn_face.cpu_precision:}`` is ``bf16-mixed`` on CPUs with AMX bf16 units, else ``32-true``;
    ``${stn_face.auto_compile:STEPS}`` is true for runs of at least 500 steps where Inductor can build kernels."""
    if not OmegaConf.has_resolver("stn_face.data_dir"):
        OmegaConf.register_new_resolver("stn_face.data_dir", _data_dir)
    if not OmegaConf.has_resolver("stn_face.cpu_precision"):
        OmegaConf.register_new_resolver("stn_face.cpu_precision", _cpu_precision)
    if not OmegaConf.has_resolver("stn_face.auto_compile"):
        OmegaConf.register_new_resolver("stn_face.auto_compile", _auto_compile)
    if not OmegaConf.has_resolver("stn_face.cache_dir"):
        OmegaConf.register_new_resolver("stn_face.cache_dir", _cache_dir)


register_resolvers()
