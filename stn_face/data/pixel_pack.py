"""Decoded evaluation crops, cached: the one owner of the pixel pack format.

An evaluation embeds the same few thousand JPEG crops every time it runs (each checkpoint of a sweep, each
study row, each validation). Decoding them again costs about a tenth of the time a small model needs to
embed them on a 2-core CPU (``benchmarks/README.md``, "Second pass"); a pixel pack decodes them once, at the
network's input size, into one file that later evaluations map into memory.

A pack is two files in a folder (:func:`pack_folder`, ``<cache>/pixels/``, for verification sets; the
crops' own folders stay as ``stn-face-prepare`` left them):

- ``pixels-<S>-<key>.npy``: ``uint8`` ``(N, S, S, 3)`` RGB, item ``i`` read with
  :func:`~stn_face.data.images.read_rgb` and area-resized to ``S x S`` exactly as
  :func:`~stn_face.data.augment.eval_transform` resizes (so embedding the pack gives the very features the
  files give); written row by row (constant memory) through a temporary file, so a killed run leaves no
  half pack;
- ``pixels-<S>-<key>.json``: the index, written after the array: format, version, ``S``, and each item's
  path, byte size and modification time. ``key`` hashes the item list and ``S``.

A pack is used only when its index names the same items with the same sizes and times (a crop replaced
by a new preparation makes a new pack) and the array's header says ``uint8 (N, S, S, 3)``; the array is
read with ``allow_pickle=False``. Anything else, a broken file included, is rebuilt, said in the log.
Item lists larger than :data:`MAX_PACK_BYTES` (say, every frame of YouTube Faces) are not packed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stn_face.files import atomic_write

log = logging.getLogger(__name__)

FORMAT = "stn_face.pixel_pack"
#: raise it whenever what a row holds changes (the decoding in ``read_rgb``, the resize in ``resize_for_eval``):
#: packs of another version are rebuilt, never read
VERSION = 1
#: item lists whose pack would be larger than this are read from their files instead (2 GiB: LFW View 2's
#: 7,701 crops take 379 MB at 128 px, 520 MB at dlib's 150 px)
MAX_PACK_BYTES = 2 << 30


def pack_folder() -> Path:
    """Where evaluations keep their pixel packs: ``<cache>/pixels`` (:func:`stn_face.paths.cache_dir`)."""
    from stn_face.paths import cache_dir

    return cache_dir() / "pixels"


def pack_paths(paths: Sequence[str | os.PathLike], image_size: int, folder: Path) -> tuple[Path, Path]:
    """The pack's ``(array, index)`` files for ``paths`` at ``image_size`` in ``folder``."""
    digest = hashlib.sha1(json.dumps([int(image_size), [str(p) for p in paths]]).encode()).hexdigest()[:16]
    stem = f"pixels-{int(image_size)}-{digest}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _stamps(paths: Sequence[str | os.PathLike]) -> list[list[Any]]:
    """Each item's ``[path, bytes, mtime_ns]``; a missing crop is an :class:`ImageReadError` naming it."""
    from stn_face.data.images import ImageReadError

    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise ImageReadError("file not found" if isinstance(error, FileNotFoundError)
                                 else f"unreadable file ({error.strerror or error})", path) from None
        stamps.append([str(path), stat.st_size, stat.st_mtime_ns])
    return stamps


def load_pack(paths: Sequence[str | os.PathLike], image_size: int, folder: Path) -> np.ndarray | None:
    """The cached pixels of ``paths`` (read-only memory map ``(N, S, S, 3)`` uint8), or None when there is
    no pack for them, or it is stale or broken (the reason is logged)."""
    array_file, index_file = pack_paths(paths, image_size, folder)
    if not (array_file.is_file() and index_file.is_file()):
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"not a version-{VERSION} {FORMAT} index")
        if index.get("stamps") != _stamps(paths):
            raise ValueError("its crops changed since it was written")
        pixels = np.load(array_file, mmap_mode="r", allow_pickle=False)
        expected = (len(paths), int(image_size), int(image_size), 3)
        if pixels.dtype != np.uint8 or pixels.shape != expected:
            raise ValueError(f"holds {pixels.dtype} {pixels.shape}, not uint8 {expected}")
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError; ImageReadError is neither
        log.info("pixel pack %s is not used (%s); decoding the crops again", array_file, error)
        return None
    return pixels


def decode_item(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """One crop as the network sees it before normalisation: ``uint8 (S, S, 3)``."""
    from stn_face.data.augment import resize_for_eval
    from stn_face.data.images import read_rgb

    return resize_for_eval(read_rgb(path), image_size)


def write_pack(paths: Sequence[str | os.PathLike], image_size: int, folder: Path,
               progress: bool = True) -> np.ndarray:
    """Decode ``paths`` into a new pack in ``folder`` and return it (memory-mapped). An unreadable crop
    raises :class:`~stn_face.data.images.ImageReadError` and leaves no pack."""
    array_file, index_file = pack_paths(paths, image_size, folder)
    shape = (len(paths), int(image_size), int(image_size), 3)
    stamps = _stamps(paths)  # before reading: a crop rewritten meanwhile makes the next run rebuild
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), desc=f"decoding crops into {array_file.name}", unit="img", disable=not progress)
    try:
        with atomic_write(array_file, "wb") as handle:
            np.lib.format.write_array_header_2_0(
                handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                         "shape": shape})
            for path in paths:
                handle.write(np.ascontiguousarray(decode_item(path, image_size)).tobytes())
                bar.update(1)
    finally:
        bar.close()
    with atomic_write(index_file) as handle:
        json.dump({"format": FORMAT, "version": VERSION, "image_size": int(image_size), "stamps": stamps},
                  handle)
    return np.load(array_file, mmap_mode="r", allow_pickle=False)


def cached_pixels(paths: Sequence[str | os.PathLike], image_size: int, folder: str | os.PathLike,
                  progress: bool = True) -> np.ndarray | None:
    """The decoded crops of ``paths`` at ``image_size``: the pack in ``folder``, written there first when
    missing or stale. None when the list is too large to pack (:data:`MAX_PACK_BYTES`) or ``folder``
    cannot be written (read-only): the caller then reads the files as usual."""
    folder = Path(folder)
    if len(paths) * int(image_size) ** 2 * 3 > MAX_PACK_BYTES:
        log.info("%d crops at %d px exceed the %d-byte pixel pack limit: read from their files",
                 len(paths), image_size, MAX_PACK_BYTES)
        return None
    pixels = load_pack(paths, image_size, folder)
    if pixels is not None:
        return pixels
    try:
        return write_pack(paths, image_size, folder, progress)
    except OSError as error:  # a read-only or full disk: evaluate from the files, as before packs
        log.warning("cannot write a pixel pack in %s (%s); decoding the crops for this run only", folder, error)
        return None

