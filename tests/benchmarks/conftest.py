"""Real LFW crops for the benchmark tests: 6 MTCNN crops of each of 10 people, linked into a folder of
their own so that the benchmarks see exactly these 60 images whatever else the shared cache holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LFW_TRAIN_PEOPLE, prepare_small_lfw


@pytest.fixture(scope="session")
def crops(lfw_dir, tmp_path_factory) -> Path:
    prepared = prepare_small_lfw(lfw_dir)
    folder = tmp_path_factory.mktemp("lfw-crops")
    for name in LFW_TRAIN_PEOPLE:
        (folder / name).mkdir()
        for source in sorted((prepared / name).glob("*.jpg"))[:6]:
            (folder / name / source.name).symlink_to(source)
    assert len(list(folder.glob("*/*.jpg"))) == 6 * len(LFW_TRAIN_PEOPLE)
    return folder
