"""``stn-face-embed ckpt=PATH input=DIR output=FILE.npz``: embed a folder of photos.

``backbone=NAME`` instead of ``ckpt`` embeds with a pretrained network alone (``backbone=dlib_resnet``, or
``backbone=iresnet50 backbone.weights=PATH``): no checkpoint, no transformer, crops resized to its input.

Every image below ``input`` (any depth, sorted) is embedded; raw photos first go through the same MTCNN
crop as the training images (:mod:`stn_face.data.crop_cache`, cached so a second run only embeds),
already-cropped faces are taken as they are with ``cropped=true``.

The ``.npz`` holds ``names`` (paths relative to ``input``, e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``),
``embeddings`` (N x D float32, L2-normalised, flip-summed unless ``flip=false``), ``failed`` (names
left out) and ``flip``. Images that cannot be read are listed in a warning and skipped. Score it with
``stn-face-eval embeddings=FILE.npz eval=lfw`` when ``input`` is an LFW image root.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stn_face.cli.entry import hydra_command, run_module
from stn_face.errors import InputError, MissingInputError, require_input

USAGE = ("usage: stn-face-embed ckpt=PATH input=DIR output=FILE.npz [cropped=true]   or   "
         "stn-face-embed backbone=dlib_resnet input=DIR output=FILE.npz [cropped=true]")


@hydra_command("embed")
def main(cfg) -> Path:
    import numpy as np
    from omegaconf import OmegaConf

    from stn_face.data.crop_cache import crop_cache_dir, prepare_crops
    from stn_face.paths import list_images, resolve_checkpoint

    pretrained = cfg.get("backbone")
    if cfg.get("ckpt") and pretrained:
        raise InputError(f"give either ckpt=PATH or backbone=NAME (a pretrained network), not both; {USAGE}")
    ckpt = None if pretrained else resolve_checkpoint(require_input(cfg.get("ckpt"), f"missing ckpt=PATH; {USAGE}"))
    require_input(cfg.get("input"), f"missing input=DIR; {USAGE}")
    output = Path(str(require_input(cfg.get("output"), f"missing output=FILE.npz; {USAGE}"))).expanduser()
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    input_dir = Path(str(cfg.input)).expanduser()
    if not input_dir.exists():
        raise MissingInputError(f"input folder not found: {input_dir}; pass input=DIR, a folder of photos")
    if not input_dir.is_dir():
        raise InputError(f"input={input_dir} is not a folder; pass input=DIR, a folder of photos "
                                 "(stn-face-verify compares two single images)")
    files = list_images(input_dir, list(cfg.extensions))
    if not files:
        raise InputError(f"no images found below {input_dir} (extensions {', '.join(cfg.extensions)})")
    from stn_face.embedder import FaceEmbedder

    if pretrained:
        embedder = FaceEmbedder.from_pretrained(OmegaConf.to_container(pretrained, resolve=True), device=cfg.device)
    else:
        embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device, trust=bool(cfg.get("trust_checkpoint")))
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


if __name__ == "__main__":
    run_module(main)
