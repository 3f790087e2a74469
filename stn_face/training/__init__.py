"""Running a training (or ``train=false`` evaluation) job: build everything from the config, fit, record.

``train`` and ``eval_set_configs`` are imported on first use, so the light modules of this package
(``settings_check``, which Hydra loads before a run starts) do not pay for Lightning."""

from __future__ import annotations

from typing import Any

__all__ = ["eval_set_configs", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stn_face.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
