"""Small helpers of the ``stn-face-*`` commands that must not import torch (fast, clear input errors)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stn_face.errors import InputError


def require_input(value: Any, message: str) -> Any:
    """``value``, or an :class:`InputError` with ``message`` when it is missing / empty."""
    if value is None or value == "" or value == "???":
        raise InputError(message)
    return value


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a run folder / ``checkpoints`` folder its ``last.ckpt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "last.ckpt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"checkpoint folder {path} holds no last.ckpt; pass ckpt=PATH to a .ckpt file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; pass ckpt=PATH to a .ckpt file written by "
                                "stn-face-train (<run>/checkpoints/last.ckpt)")
    return path


def require_image_file(path: str | os.PathLike, label: str) -> Path:
    """An existing file, or ``FileNotFoundError`` naming the option (``a=...``)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"{label}={path}: image not found")
    if file.is_dir():
        raise InputError(f"{label}={path} is a folder; pass one image file")
    return file


def list_images(folder: str | os.PathLike, extensions: Sequence[str]) -> list[str]:
    """Image files below ``folder`` (any depth, hidden files and folders left out) as sorted ``/``-separated
    paths relative to it."""
    root = Path(folder)
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found = []
    for current, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(current).relative_to(root)
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                found.append((rel / name).as_posix())
    return sorted(found)
