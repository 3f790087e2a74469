"""``model.compile``: the backbone and the localization net compiled in place by ``torch.compile``, and the
spatial transformer's sampling grid (:meth:`~stn_face.nn.transformer.SpatialTransformer.compile_sampling_grid`).

An eager CPU training step of the main job spends about half its time outside the convolutions (BatchNorm
and PReLU forward and backward, pooling), in passes over memory that Inductor fuses; ``make bench``'s
``mfu`` section (``main_job``: ``new`` against ``new_eager``) measures what compiling gains, and
benchmarks/README.md records it. ``nn.Module.compile`` compiles the modules' calls in place, so
parameter names, checkpoints and ``FaceEmbedder`` stay as without it. The first step pays the
compilation (tens of seconds on 2 cores with an empty Inductor cache).

On the CPU Inductor builds C++ kernels: it needs a C++ compiler and the Python headers.
``${stn_face.auto_compile:STEPS}`` (``conf/model/default.yaml``) switches it on for runs long enough to
pay the compilation back, where both exist.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from torch import nn

from stn_face.errors import InputError

#: runs shorter than this many optimiser steps stay eager under ``auto`` (compiling costs 15-40 s on 2 cores,
#: about 50 eager steps of the main job)
AUTO_COMPILE_MIN_STEPS = 500


def compiler_missing() -> str | None:
    """Why Inductor cannot build CPU kernels here (no C++ compiler, no Python headers), or None."""
    compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler found (CXX, g++, c++ or clang++ on PATH)"
    include = sysconfig.get_paths().get("include")
    if not include or not (Path(include) / "Python.h").is_file():
        return f"the Python headers are missing ({include}/Python.h; install python3-dev)"
    return None


def auto_compile(max_steps: int | str | None) -> bool:
    """``model.compile``'s default: compile when the run has at least :data:`AUTO_COMPILE_MIN_STEPS` steps
    and Inductor can build kernels here."""
    try:
        steps = int(max_steps) if max_steps is not None else 0
    except (TypeError, ValueError):
        return False
    return (steps < 0 or steps >= AUTO_COMPILE_MIN_STEPS) and compiler_missing() is None


def compile_networks(*modules: nn.Module | None) -> bool:
    """Compile each given module's call in place (``nn.Module.compile``; None is skipped). Returns True.
    Raises :class:`InputError` naming the fix when Inductor cannot build kernels on this machine."""
    missing = compiler_missing()
    if missing is not None:
        raise InputError(f"model.compile=true needs a C++ compiler and the Python headers: {missing}. "
                         "Install them (e.g. apt install g++ python3-dev) or set model.compile=false")
    for module in modules:
        if module is not None:
            module.compile()
    return True
