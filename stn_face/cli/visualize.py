"""``stn-face-visualize ckpt=PATH input=DIR_OR_IMAGE``: what the learned alignment does, as a PNG grid.

Each input face (the crop the network gets, resized to its ``image_size``) is drawn with the
outline of where the spatial transformer samples (red, its top-left corner a yellow dot), and the aligned
face the backbone sees beside it (:mod:`stn_face.evaluation.drawing`). Raw photos go through the
training MTCNN crop first; ``cropped=true`` takes face crops as they are.

Example::

    stn-face-visualize ckpt=last.ckpt input=$STN_FACE_DATA/lfw/lfw-deepfunneled/Aaron_Peirsol max_images=8
"""

from __future__ import annotations

import sys
from pathlib import Path

from stn_face.cli.entry import hydra_command, run_module
from stn_face.errors import InputError, MissingInputError, require_input

USAGE = "usage: stn-face-visualize ckpt=PATH input=DIR_OR_IMAGE [output=FILE.png] [max_images=N]"


@hydra_command("visualize")
def main(cfg) -> Path:
    import torch
    from PIL import Image

    from stn_face.data.images import ImageReadError, read_rgb
    from stn_face.evaluation.alignment import sampled_outline
    from stn_face.evaluation.drawing import draw_alignment, to_pixels
    from stn_face.paths import list_images, resolve_checkpoint

    ckpt = resolve_checkpoint(require_input(cfg.get("ckpt"), f"missing ckpt=PATH; {USAGE}"))
    source = Path(str(require_input(cfg.get("input"), f"missing input=DIR; {USAGE}"))).expanduser()
    if not source.exists():
        raise MissingInputError(f"input not found: {source}; pass input=DIR (a folder of photos) or one image")
    if source.is_dir():
        names = list_images(source, list(cfg.extensions))[: int(cfg.max_images)]
        files = [source / n for n in names]
    else:
        names, files = [source.name], [source]
    if not files:
        raise InputError(f"no images found below {source}")
    from stn_face.embedder import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device, trust=bool(cfg.get("trust_checkpoint")))
    faces, captions = [], []
    for name, file in zip(names, files):
        try:
            image = read_rgb(file)
        except ImageReadError as error:
            print(f"warning: skipped {name}: {error.reason}", file=sys.stderr)
            continue
        faces.append(image if cfg.cropped else embedder.crop(image)[0])
        captions.append(name)
    if not faces:
        raise InputError(f"none of the images below {source} could be read")
    tile = int(cfg.tile)
    aligned, transforms = embedder.align(faces)
    outlines, lines = sampled_outline(embedder.transformer, torch.as_tensor(transforms))
    picture = draw_alignment(faces, aligned, to_pixels(outlines, tile), None if lines is None else to_pixels(lines, tile),
                             title=f"{embedder.transform_name} transform, {Path(str(embedder.checkpoint_path)).name}",
                             captions=captions, columns=int(cfg.columns), tile=tile)
    output = Path(str(cfg.output)).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(output)
    print(f"wrote {output}: {len(faces)} faces, {embedder.transform_name} transform "
          f"(red: where the aligned face is sampled from)", flush=True)
    return output


if __name__ == "__main__":
    run_module(main)
