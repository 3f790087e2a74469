"""Shared by the packed-format tests: real CelebA-subset crops (MTCNN-prepared into the shared cache, as
``data=celeba_subset`` prepares them) and their ``.rec`` pack. Import the fixtures into a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

#: the first identities of the CelebA subset (sorted), ~20 photos each
CELEBA_IDENTITIES = 6


def celeba_crops_root(celeba_dir: Path, identities: int, root: Path) -> Path:
    """``root/<identity>/<image>.jpg``: links to the cached crops of the first ``identities`` identities (a
    prepared folder holding only them, nothing copied)."""
    from stn_face.data.prepare import crop_path_map, prepare_collection
    from stn_face.paths import cache_dir

    names = sorted(p.name for p in celeba_dir.iterdir() if p.is_dir())[:identities]
    files = [f"{name}/{photo.name}" for name in names for photo in sorted((celeba_dir / name).iterdir())]
    prepared = cache_dir() / "prepared" / "celeba-subset-crop128"  # data=celeba_subset's folder and settings
    done = crop_path_map(prepared) if (prepared / "manifest.csv").is_file() else {}
    if any(f not in done for f in files):  # crops already there are used whichever detector version made them
        prepare_collection(celeba_dir, prepared, files=files, workers=2, progress=False, replace_stale=True)
    for source, crop in crop_path_map(prepared).items():
        if source.split("/", 1)[0] in names:
            link = root / source
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(crop)
    return root


@pytest.fixture(scope="session")
def celeba_crops(celeba_dir, tmp_path_factory) -> Path:
    return celeba_crops_root(celeba_dir, CELEBA_IDENTITIES, tmp_path_factory.mktemp("celeba-crops"))


@pytest.fixture(scope="session")
def celeba_pack(celeba_crops, tmp_path_factory) -> Path:
    """``train.rec`` + ``train.idx`` + ``property`` + ``identities.txt`` of :func:`celeba_crops`."""
    from stn_face.data.pack import pack_folders

    out = tmp_path_factory.mktemp("celeba-pack")
    pack_folders(celeba_crops, out)
    return out
