"""Checkpoints that are never half-written: write to a temporary file, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically: a killed process leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic (temporary file + ``os.replace``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model built from the current config."""


def check_compatible(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointMismatchError` listing what differs between a checkpoint's weights and
    ``model`` (missing/unexpected tensors, shape changes), instead of PyTorch's long load error."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # corrupt or not a checkpoint at all
        raise CheckpointMismatchError(f"{path} is not a readable checkpoint ({error})") from None
    saved = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    current = model.state_dict()
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    reshaped = [f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(current[k].shape)}"
                for k in sorted(set(saved) & set(current))
                if hasattr(saved[k], "shape") and saved[k].shape != current[k].shape]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    for label, items in (("missing in checkpoint", missing), ("not in this model", unexpected),
                         ("different shape", reshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    raise CheckpointMismatchError(
        f"checkpoint {path} was trained with another architecture: " + "; ".join(problems)
        + ". Use the transform/localization/backbone/head configs it was trained with (see .hydra/config.yaml "
        "in its run folder)."
    )
