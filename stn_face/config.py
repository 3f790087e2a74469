"""Hydra/OmegaConf glue: config resolvers and friendly errors for config mistakes."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _data_dir() -> str:
    from stn_face.paths import DATA_ENV

    value = os.environ.get(DATA_ENV)
    # Unset is not an error until a data path is actually used; the loaders then name the variable.
    return str(Path(value).expanduser().resolve()) if value else f"<{DATA_ENV} is not set>"


def _cache_dir() -> str:
    from stn_face.paths import cache_dir

    return str(cache_dir())


def register_resolvers() -> None:
    """``${stn_face.data_dir:}`` is ``$STN_FACE_DATA`` made absolute; ``${stn_face.cache_dir:}`` a writable cache."""
    if not OmegaConf.has_resolver("stn_face.data_dir"):
        OmegaConf.register_new_resolver("stn_face.data_dir", _data_dir)
    if not OmegaConf.has_resolver("stn_face.cache_dir"):
        OmegaConf.register_new_resolver("stn_face.cache_dir", _cache_dir)


register_resolvers()
