"""Pixel packs: real LFW crops decoded once, bitwise the pixels the files give, rebuilt when stale or broken."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from stn_face.data import pixel_pack
from stn_face.data.augment import resize_for_eval
from stn_face.data.images import ImageReadError, read_rgb
from stn_face.data.pixel_pack import cached_pixels, load_pack, pack_paths

pytestmark = pytest.mark.data


@pytest.fixture()
def crop_files(view2_crops, tmp_path):
    """Eight real LFW View 2 crops, copied so a test may replace one."""
    root, names = view2_crops
    folder = tmp_path / "crops"
    folder.mkdir()
    paths = []
    for i, name in enumerate(names[:8]):
        paths.append(folder / f"{i}.jpg")
        shutil.copyfile(root / name, paths[-1])
    return paths


@pytest.mark.parametrize("size", [128, 160])
def test_a_pack_holds_the_decoded_resized_crops_and_is_reused(crop_files, tmp_path, size):
    folder = tmp_path / "packs"
    pixels = cached_pixels(crop_files, size, folder, progress=False)
    assert isinstance(pixels, np.memmap) and pixels.shape == (8, size, size, 3) and pixels.dtype == np.uint8
    for row, path in zip(pixels, crop_files):
        assert np.array_equal(row, resize_for_eval(read_rgb(path), size))
    array_file, index_file = pack_paths(crop_files, size, folder)
    written = array_file.stat().st_mtime_ns
    again = cached_pixels(crop_files, size, folder, progress=False)
    assert np.array_equal(again, pixels) and array_file.stat().st_mtime_ns == written  # read, not rewritten
    assert sorted(p.name for p in folder.iterdir()) == sorted([array_file.name, index_file.name])
    assert json.loads(index_file.read_text())["stamps"][0][0] == str(crop_files[0])
    # another item list (or size) is another pack, the first one untouched
    other = cached_pixels(crop_files[:3], size, folder, progress=False)
    assert np.array_equal(other, pixels[:3]) and len(list(folder.iterdir())) == 4


def test_a_replaced_crop_makes_a_new_pack(crop_files, tmp_path):
    folder = tmp_path / "packs"
    before = np.array(cached_pixels(crop_files, 128, folder, progress=False))
    shutil.copyfile(crop_files[5], crop_files[2])  # crop 2 now holds another face
    stamp = crop_files[5].stat()
    os.utime(crop_files[2], ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    after = cached_pixels(crop_files, 128, folder, progress=False)
    assert np.array_equal(after[2], before[5]) and not np.array_equal(after[2], before[2])
    assert np.array_equal(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0))


def test_a_broken_or_hostile_pack_is_rebuilt_never_unpickled(crop_files, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stn_face.data.pixel_pack")
    folder = tmp_path / "packs"
    good = np.array(cached_pixels(crop_files, 128, folder, progress=False))
    array_file, index_file = pack_paths(crop_files, 128, folder)
    np.save(array_file, np.array([{"payload": "an object"}] * 8, dtype=object))  # needs pickle to load
    assert load_pack(crop_files, 128, folder) is None
    assert "not used" in caplog.text and "decoding the crops again" in caplog.text
    assert np.array_equal(cached_pixels(crop_files, 128, folder, progress=False), good)
    np.save(array_file, np.zeros((8, 64, 64, 3), np.uint8))  # the right dtype, the wrong shape
    assert load_pack(crop_files, 128, folder) is None
    index_file.write_text("{not json")
    assert load_pack(crop_files, 128, folder) is None
    assert np.array_equal(cached_pixels(crop_files, 128, folder, progress=False), good)


def test_an_unreadable_crop_is_named_and_leaves_no_pack(crop_files, tmp_path):
    folder = tmp_path / "packs"
    crop_files[3].write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError) as error:
        cached_pixels(crop_files, 128, folder, progress=False)
    assert str(crop_files[3]) in str(error.value)
    assert list(folder.iterdir()) == []  # no half pack, no temporary file
    with pytest.raises(ImageReadError, match="file not found"):
        cached_pixels([crop_files[0], tmp_path / "gone.jpg"], 128, folder, progress=False)


def test_no_pack_where_it_cannot_be_written_or_would_be_too_large(crop_files, tmp_path, monkeypatch, caplog):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    assert cached_pixels(crop_files, 128, not_a_folder / "packs", progress=False) is None
    assert "cannot write a pixel pack" in caplog.text
    monkeypatch.setattr(pixel_pack, "MAX_PACK_BYTES", 8 * 128 * 128 * 3 - 1)
    assert cached_pixels(crop_files, 128, tmp_path / "packs", progress=False) is None
    assert not (tmp_path / "packs").exists()
