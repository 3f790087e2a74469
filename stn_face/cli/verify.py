"""``stn-face-verify ckpt=PATH a=IMAGE b=IMAGE``: are these two faces the same person?

Prints the cosine score of the two flip-summed features and the decision at the threshold the
checkpoint calibrated on LFW during training (``threshold=T`` overrides it). Raw photos go through the
training MTCNN crop first; ``cropped=true`` takes face crops as they are. ``save_aligned=DIR`` writes
the two aligned faces the backbone sees.

Example::

    stn-face-verify ckpt=last.ckpt a=photos/me.jpg b=photos/someone.jpg save_aligned=aligned/
"""

from __future__ import annotations

from pathlib import Path

from stn_face.cli.entry import hydra_command, run_module
from stn_face.errors import require_image_file, require_input

USAGE = "usage: stn-face-verify ckpt=PATH a=IMAGE b=IMAGE [threshold=T] [save_aligned=DIR]"


def load_face(embedder, path: str, cropped: bool, label: str):
    """The face of image ``path`` (option ``label``) as the network gets it: the photo's training crop,
    or the image itself when ``cropped``."""
    from stn_face.data.images import ImageReadError, read_rgb

    try:
        image = read_rgb(Path(path).expanduser())
    except ImageReadError as error:
        raise ImageReadError(f"{label}={path}: {error.reason}") from None
    if cropped:
        return image
    face, status = embedder.crop(image)
    if status != "detected":
        print(f"note: no face found in {label}={path}; using the centre of the photo", flush=True)
    return face


@hydra_command("verify")
def main(cfg) -> dict:
    import numpy as np
    from PIL import Image

    from stn_face.paths import resolve_checkpoint

    for key in ("ckpt", "a", "b"):
        require_input(cfg.get(key), f"missing {key}=...; {USAGE}")
    ckpt = resolve_checkpoint(cfg.ckpt)
    for key in ("a", "b"):
        require_image_file(cfg[key], key)
    from stn_face.embedder import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint(ckpt, device=cfg.device, trust=bool(cfg.get("trust_checkpoint")))
    faces = [load_face(embedder, str(cfg[key]), bool(cfg.cropped), key) for key in ("a", "b")]
    features = embedder.embed(faces, flip=bool(cfg.flip))
    score = float(np.dot(features[0], features[1]))
    threshold = cfg.get("threshold")
    source = "threshold=" if threshold is not None else f"calibrated on {embedder.threshold_set}"
    threshold = float(threshold) if threshold is not None else embedder.threshold
    print(f"score: {score:.4f} (cosine similarity, -1 to 1)")
    if threshold is None:
        decision = None
        print("decision: unknown (the checkpoint holds no calibrated threshold; pass threshold=T)")
    else:
        decision = "same" if score >= threshold else "different"
        words = "same person" if decision == "same" else "different people"
        print(f"threshold: {threshold:.4f} ({source})")
        print(f"decision: {decision} ({words})", flush=True)
    if cfg.get("save_aligned"):
        folder = Path(str(cfg.save_aligned)).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        aligned, _ = embedder.align(faces)
        for key, face in zip(("a", "b"), aligned):
            target = folder / f"{key}_{Path(str(cfg[key])).stem}_aligned.png"
            Image.fromarray(face).save(target)
            print(f"saved {target}")
    return {"score": score, "threshold": threshold, "decision": decision}


if __name__ == "__main__":
    run_module(main)
