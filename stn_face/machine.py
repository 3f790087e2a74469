"""What this machine's CPU is, read once from ``/proc/cpuinfo``: the one reader that benchmarks,
experiments and the precision default use (empty answers where the file does not exist)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model", "cpuinfo", "describe"]

CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` fields of ``/proc/cpuinfo`` (``model name``, ``cpu MHz``,
    ``flags``, ...); ``{}`` where it cannot be read (not Linux)."""
    info: dict[str, str] = {}
    try:
        text = CPUINFO.read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            if info:  # the end of the first processor's block
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_bf16``, ...)."""
    return set(cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name (``Intel(R) Xeon(R) Processor``), else what ``platform`` knows."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def describe() -> str:
    """``<model>, <n> cores``, with `` (AMX)`` after the model where it has AMX: the machine every figure names."""
    amx = " (AMX)" if "amx_bf16" in cpu_flags() else ""
    return f"{cpu_model()}{amx}, {os.cpu_count()} cores"
