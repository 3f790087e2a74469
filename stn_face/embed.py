"""``stn-face-embed ckpt=PATH input=DIR output=FILE.npz``: embed a folder of photos.

Every image below ``input`` (any depth, sorted) is embedded; raw photos first go through the same MTCNN
crop as the training images (``stn_face.data.prepare.prepare_collection``, cached under ``cache_dir``
so a second run only embeds), already-cropped faces are taken as they are with ``cropped=true``.

The ``.npz`` holds ``names`` (paths relative to ``input``, e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``),
``embeddings`` (N x D float32, L2-normalised, flip-summed unless ``flip=false``), ``failed`` (names
left out) and ``flip``. Images that cannot be read are listed in a warning and skipped. Score it with
``stn-face-eval embeddings=FILE.npz eval=lfw`` when ``input`` is an LFW image root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from stn_face.config import CONF_DIR
from stn_face.errors import InputError, friendly_errors

log = logging.getLogger("stn_face.embed")

USAGE = "usage: stn-face-embed ckpt=PATH input=DIR output=FILE.npz [cropped=true]"
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
    from stn_face.data.prepare import crop_path_map, prepare_collection, read_manifest

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
    for source_dir, output_dir, sources, prefix in jobs:
        prepare_collection(source_dir, output_dir, files=sources, workers=workers, progress=progress, **crop)
        done = crop_path_map(output_dir)
        status = {row["source"]: row["status"] for row in read_manifest(output_dir)}
        for source in sources:
            name = source[len(prefix):]
            if source in done:
                crops[name] = done[source]
            else:
                failed[name] = status.get(source, "no crop").removeprefix("failed: ")
    return crops, failed


def run(cfg: DictConfig) -> Path:
    from stn_face.cli_utils import list_images, require_input, resolve_checkpoint_path

    ckpt = resolve_checkpoint_path(require_input(cfg.get("ckpt"), f"missing ckpt=PATH; {USAGE}"))
    require_input(cfg.get("input"), f"missing input=DIR; {USAGE}")
    output = Path(str(require_input(cfg.get("output"), f"missing output=FILE.npz; {USAGE}"))).expanduser()
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    input_dir = Path(str(cfg.input)).expanduser()
    if not input_dir.exists():
        raise FileNotFoundError(f"input folder not found: {input_dir}; pass input=DIR, a folder of photos")
    if not input_dir.is_dir():
        raise NotADirectoryError(f"input={input_dir} is not a folder; pass input=DIR, a folder of photos "
                                 "(stn-face-verify compares two single images)")
    files = list_images(input_dir, list(cfg.extensions))
    if not files:
        raise InputError(f"no images found below {input_dir} (extensions {', '.join(cfg.extensions)})")
    from stn_face.embedder import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device)
    progress = bool(cfg.progress)
    if cfg.cropped:
        paths = {name: input_dir / name for name in files}
        failed: dict[str, str] = {}
    else:
        crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") else embedder.crop_settings
        cache = Path(str(cfg.cache_dir)).expanduser() if cfg.get("cache_dir") else crop_cache_dir(input_dir, crop)
        paths, failed = prepare_crops(input_dir.resolve(), files, crop, cache, int(cfg.workers), progress)
    names = [name for name in files if name in paths]
    embeddings, unreadable = embedder.embed_files([paths[n] for n in names], batch_size=int(cfg.batch_size),
                                                  progress=progress, flip=bool(cfg.flip), skip_errors=True)
    if unreadable:
        by_path = {str(paths[n]): n for n in names}
        failed.update({by_path[p]: reason for p, reason in unreadable.items()})
        names = [n for n in names if n not in failed]
    if failed:
        listed = "\n".join(f"  {name}: {reason}" for name, reason in sorted(failed.items())[:20])
        more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
        print(f"warning: {len(failed)} of {len(files)} images skipped:\n{listed}{more}", file=sys.stderr, flush=True)
    if not names:
        raise InputError(f"none of the {len(files)} images below {input_dir} could be embedded")
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, names=np.asarray(names, dtype=str), embeddings=embeddings.astype(np.float32),
             failed=np.asarray(sorted(failed), dtype=str), flip=np.asarray(bool(cfg.flip)))
    print(f"wrote {output}: {len(names)} embeddings of dimension {embeddings.shape[1]}"
          f"{' (flip-summed)' if cfg.flip else ''}; {len(failed)} skipped", flush=True)
    return output


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="embed")
def main(cfg: DictConfig) -> None:
    with friendly_errors():
        run(cfg)


if __name__ == "__main__":
    main()
