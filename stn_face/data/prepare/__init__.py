"""Face preparation: detect, crop and record every photo of an identity-folder collection.

Input: ``<input>/<identity>/<image>`` (deeper folders inside an identity folder are walked too, e.g.
YTF's ``<person>/<video>/<frame>.jpg``). Output: the same relative layout of JPEG face crops, plus in
the output root

- ``manifest.csv``: one row per input file: ``source`` (path relative to the input root, ``/``
  separated), ``identity``, ``output`` (crop path relative to the output root, empty when there is no
  crop), ``box`` (``x1 y1 x2 y2`` of the chosen detection in the source file's pixels, also for photos
  downscaled for being larger than ``max_pixels``), ``landmarks`` (10 numbers:
  x y of left eye, right eye, nose, left and right mouth corner), ``score`` and ``status``:
  ``detected``, ``fallback_center`` (no face found: centre crop), ``failed: <reason>`` (unreadable
  file) or ``skipped: <reason>`` (left out by the identity filters or the extension list);
- ``summary.json``: the counts of the last run; ``prepare_settings.json``: the settings that shape
  the crops, checked on every later run so one folder never mixes two kinds of crops.

Decisions:
- Root-level files (e.g. ``identity_subset.txt``) are not identities: ignored, counted in the
  summary as ``ignored_root_files``. Hidden files and folders (``.name``) are ignored everywhere.
- Files in identity folders whose extension is not in ``extensions`` get a ``skipped`` row, so the
  manifest accounts for every visible file. Explicitly listed ``files=`` are processed whatever
  their extension.
- Identity filters count the candidate files (before detection): an identity with fewer than
  ``min_images_per_identity`` files, or named in ``exclude_identities``, is skipped; beyond
  ``max_images_per_identity`` the files after the first ones in sorted name order are skipped. The
  filters are re-applied on every run and win over earlier results (a crop of a now-excluded identity
  is deleted), so the output folder never holds identities the filters leave out.
- Crops are JPEG; a source ``a.jpg``/``a.jpeg`` keeps its name, any other ``a.png`` becomes
  ``a.png.jpg`` (so ``a.png`` and ``a.jpg`` never collide).
- ``crop`` mode: the square of side ``margin`` x the longer box side, centred on the box, resized to
  ``size``; where the square leaves the photo it is padded with black (``border: constant``,
  like the zeros the spatial transformer samples outside its input) or with the edge pixels
  (``border: replicate``).
- ``landmarks`` mode: 5-point similarity alignment onto the ArcFace template
  (``insightface.utils.face_align.norm_crop``); ``size`` must be a multiple of 112 or 128.
- No face (either mode): the centre square of side ``fallback_size`` pixels, or
  ``fallback_fraction`` x the shorter image side, resized to ``size`` (status ``fallback_center``),
  so every identity keeps its photos; which ones is recorded.
- Resuming: rows already in the manifest are not redone (``failed`` ones neither, unless
  ``retry_failed``); a usable row whose crop file vanished is redone. Rows are appended and flushed
  as they complete; the final manifest is rewritten sorted and de-duplicated through a temporary
  file and ``os.replace``. An advisory lock (``.prepare.lock``) keeps two runs out of one folder.
- Workers (:mod:`.workers`): on the CPU, ``workers`` spawned processes, each building its detector
  once and detecting chunks of up to ``photos_per_batch`` photos; a worker that dies (a crashing decoder)
  costs only its file, which is recorded as ``failed``. With ``workers=1``, or a detector on another
  device (``device=cuda``), this process feeds the detector batches while threads read and write.
- The detector is part of the recorded settings, with its ``describe()`` (backend, weights digest)
  where it has one: crops of another detector are never mixed into a folder (``replace_stale`` makes
  a cache folder prepared with other settings be emptied and prepared again instead of refused).

The package: :mod:`.settings` (:class:`CropSettings`, the detector record), :mod:`.crop` (geometry,
:func:`crop_photo`), :mod:`.manifest` (the one reader and writer of the output folder's records),
:mod:`.plan` (files, identities, output names), :mod:`.workers`, :mod:`.run` (:func:`prepare_collection`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use, so that the command can register
# the crop settings' defaults (settings.py: no detector, no torch) before anything heavy is loaded.
_EXPORTS = {
    **dict.fromkeys(("CropResult", "center_crop", "crop_photo", "encode_jpeg", "face_crop",
                     "insightface_norm_crop", "jpeg_roundtrip", "square_crop"), "crop"),
    **dict.fromkeys(("DETECTED", "FALLBACK", "MANIFEST_COLUMNS", "MANIFEST_NAME", "SETTINGS_NAME",
                     "SUMMARY_NAME", "USABLE_STATUSES", "crop_path_map", "parse_numbers", "read_manifest"),
                    "manifest"),
    **dict.fromkeys(("DEFAULT_EXTENSIONS", "output_name", "read_identity_list"), "plan"),
    **dict.fromkeys(("PrepareSummary", "prepare_collection"), "run"),
    **dict.fromkeys(("BORDERS", "MODES", "CropSettings", "PrepareError", "detector_record", "register_config"),
                    "settings"),
    "build_detector": "workers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
