"""Where data lives, where prepared files are cached, and which checkpoint a path names.

The real data is never copied into the repository: it is found through the ``STN_FACE_DATA``
environment variable, and everything derived from it (face crops, manifests, embeddings caches) is
written under :func:`cache_dir`, which is writable even when the data folder is read-only. Nothing here
imports torch, so path mistakes fail fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from stn_face.errors import MissingInputError

DATA_ENV = "STN_FACE_DATA"
CACHE_ENV = "STN_FACE_CACHE"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: True when running from a source checkout (editable install), False for an installed wheel
SOURCE_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "stn_face").is_dir()



def default_data_dir() -> Path:
    """Where ``stn-face-data`` downloads to and every command looks when ``STN_FACE_DATA`` is unset:
    ``$XDG_CACHE_HOME/stn_face/data`` (``~/.cache/stn_face/data``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stn_face" / "data"


HOW_TO_GET_DATA = (
    f"Set {DATA_ENV} to a folder holding lfw/ (deep-funneled LFW and its pair files), celeba-subset/ "
    f"and ytf/, e.g. `export {DATA_ENV}=../shared/data`, or run `stn-face-data` to download LFW into "
    f"{default_data_dir()}, the folder used when {DATA_ENV} is unset."
)


class DataNotFoundError(MissingInputError):
    """A data folder the user pointed at (or forgot to point at) does not exist or is empty."""


def data_root(required: bool = True) -> Path | None:
    """The root of the real face data: ``$STN_FACE_DATA``, else :func:`default_data_dir` when it exists.

    Raises :class:`DataNotFoundError` naming the variable, the default folder and how to get the data
    when ``required`` and neither is a folder; returns None otherwise.
    """
    value = os.environ.get(DATA_ENV)
    if not value:
        default = default_data_dir()
        if default.is_dir():
            return default.resolve()
        if required:
            raise DataNotFoundError(f"{DATA_ENV} is not set and {default} does not exist. {HOW_TO_GET_DATA}")
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        if required:
            raise DataNotFoundError(f"{DATA_ENV}={value} is not a folder. {HOW_TO_GET_DATA}")
        return None
    return root


def cache_dir() -> Path:
    """A writable folder for prepared crops and caches: ``$STN_FACE_CACHE``, else ``<repo>/.cache`` in a
    source checkout, else the user's cache folder (``$XDG_CACHE_HOME/stn_face`` or ``~/.cache/stn_face``)."""
    value = os.environ.get(CACHE_ENV)
    if value:
        root = Path(value).expanduser()
    elif SOURCE_CHECKOUT:
        root = REPO_ROOT / ".cache"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stn_face"
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def resolve_checkpoint(value: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                       option: str = "ckpt") -> Path:
    """The checkpoint file that ``value`` names: a ``.ckpt`` file, a run folder or its ``checkpoints/``
    folder (their ``last.ckpt``), or ``last`` (``<run_dir>/checkpoints/last.ckpt``).

    Raises :class:`MissingInputError` naming ``option`` and what to pass instead.
    """
    if str(value) == "last":
        if run_dir is None:
            raise MissingInputError(f"{option}=last needs a run folder; pass {option}=PATH to a .ckpt file")
        value = Path(run_dir)
    path = Path(value).expanduser()
    if path.is_dir():
        for candidate in (path / "last.ckpt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise MissingInputError(f"checkpoint folder {path} holds no last.ckpt; pass {option}=PATH to a .ckpt file")
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path}; pass {option}=PATH to a .ckpt file written by "
                                "stn-face-train (<run>/checkpoints/last.ckpt), a run folder, or last")
    return path


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
