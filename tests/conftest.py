"""Shared fixtures: real data through STN_FACE_DATA.

On a user's machine without the data, data tests skip with a message saying how to get it. In CI
(``STN_FACE_REQUIRE_DATA=1``, set by ``.ci/run``) a missing data folder fails the tests instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stn_face.paths import HOW_TO_GET_DATA, data_root
from tests.helpers import build_checkpoints, view2_subset

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")



def _require_data() -> bool:
    return os.environ.get("STN_FACE_REQUIRE_DATA", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data root; skips (or fails in CI) when it is not available."""
    root = data_root(required=False)
    if root is None or not (root / "lfw").is_dir():
        message = f"real face data not found. {HOW_TO_GET_DATA}"
        if _require_data():
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def lfw_dir(data_dir: Path) -> Path:
    return data_dir / "lfw"


@pytest.fixture(scope="session")
def celeba_dir(data_dir: Path) -> Path:
    return data_dir / "celeba-subset"


@pytest.fixture(scope="session")
def ytf_dir(data_dir: Path) -> Path:
    return data_dir / "ytf"


# ------------------------------------------------- the "use a trained model" tests (tests/helpers.py builds them)
@pytest.fixture(scope="session")
def checkpoints(lfw_dir, tmp_path_factory) -> dict[str, Path]:
    return build_checkpoints(lfw_dir, tmp_path_factory.getbasetemp() / "use-checkpoints")


@pytest.fixture(scope="session")
def view2_crops(data_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """(image root of crops, names) for the first 15 + 15 View 2 pairs of every fold (300 pairs)."""
    return view2_subset(data_dir, 15, tmp_path_factory.getbasetemp() / "view2-crops")


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

