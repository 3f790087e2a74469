"""MTCNN crops of any folder of raw photos, cached per input folder and crop settings.

``stn-face-embed`` and :class:`~stn_face.data.eval_sets.VerificationSet`-free callers use this to turn a
user's photo folder into training-style crops once; a second run only reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT_FOLDER = "_"  # identity folder name under which root-level photos are linked for prepare_collection


def crop_cache_dir(input_dir: Path, crop: dict[str, Any]) -> Path:
    """``<cache>/prepared/embed-<hash>``: one folder per input folder and crop settings."""
    from stn_face.paths import cache_dir

    key = json.dumps({"input": str(input_dir.resolve()), "crop": crop}, sort_keys=True)
    return cache_dir() / "prepared" / f"embed-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def prepare_crops(input_dir: Path, files: Sequence[str], crop: dict[str, Any], cache: Path, workers: int = 2,
                  progress: bool = True) -> tuple[dict[str, Path], dict[str, str]]:
    """MTCNN crops of ``files`` (relative to ``input_dir``) into ``cache``: ``(name -> crop path,
    name -> failure reason)``. Files directly in ``input_dir`` (no identity folder, which
    ``prepare_collection`` requires) are linked under ``cache/links/_/`` and prepared from there."""
    from stn_face.data.prepare import CropSettings, crop_path_map, prepare_collection, read_manifest

    crops: dict[str, Path] = {}
    failed: dict[str, str] = {}
    nested = [f for f in files if "/" in f]
    top = [f for f in files if "/" not in f]
    jobs = []
    if nested:
        jobs.append((input_dir, cache / "crops", nested, ""))
    if top:
        links = cache / "links"
        (links / ROOT_FOLDER).mkdir(parents=True, exist_ok=True)
        for name in top:
            link = links / ROOT_FOLDER / name
            target = (input_dir / name).resolve()
            if link.is_symlink() and Path(os.readlink(link)) != target:
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(target)
        jobs.append((links, cache / "crops-root", [f"{ROOT_FOLDER}/{n}" for n in top], f"{ROOT_FOLDER}/"))
    settings, options = CropSettings.split(crop)
    for source_dir, output_dir, sources, prefix in jobs:
        prepare_collection(source_dir, output_dir, settings, files=sources, workers=workers, progress=progress,
                           replace_stale=True, **options)
        done = crop_path_map(output_dir)
        status = {row["source"]: row["status"] for row in read_manifest(output_dir)}
        for source in sources:
            name = source[len(prefix):]
            if source in done:
                crops[name] = done[source]
            else:
                failed[name] = status.get(source, "no crop").removeprefix("failed: ")
    return crops, failed
