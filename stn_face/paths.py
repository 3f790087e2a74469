"""Where data lives and where prepared files are cached.

The real data is never copied into the repository: it is found through the ``STN_FACE_DATA``
environment variable, and everything derived from it (face crops, manifests, embeddings caches) is
written under :func:`cache_dir`, which is writable even when the data folder is read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "STN_FACE_DATA"
CACHE_ENV = "STN_FACE_CACHE"
REPO_ROOT = Path(__file__).resolve().parent.parent

HOW_TO_GET_DATA = (
    f"Set {DATA_ENV} to a folder holding lfw/ (deep-funneled LFW and its pair files), celeba-subset/ "
    "and ytf/, e.g. `export STN_FACE_DATA=../shared/data`, or download LFW with `stn-face-data`."
)


class DataNotFoundError(FileNotFoundError):
    """A data folder the user pointed at (or forgot to point at) does not exist or is empty."""


def data_root(required: bool = True) -> Path | None:
    """The root of the real face data, from ``$STN_FACE_DATA``.

    Raises :class:`DataNotFoundError` naming the variable and how to get the data when ``required``
    and the variable is unset or points at a missing folder; returns None otherwise.
    """
    value = os.environ.get(DATA_ENV)
    if not value:
        if required:
            raise DataNotFoundError(f"{DATA_ENV} is not set. {HOW_TO_GET_DATA}")
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        if required:
            raise DataNotFoundError(f"{DATA_ENV}={value} is not a folder. {HOW_TO_GET_DATA}")
        return None
    return root


def cache_dir() -> Path:
    """A writable folder for prepared crops and caches: ``$STN_FACE_CACHE`` or ``<repo>/.cache``."""
    value = os.environ.get(CACHE_ENV)
    root = Path(value).expanduser() if value else REPO_ROOT / ".cache"
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()
