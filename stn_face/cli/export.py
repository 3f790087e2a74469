"""``stn-face-export ckpt=PATH format=onnx|torchscript [output=FILE]``: the whole embedder as one graph
(see :mod:`stn_face.export` for the graph's inputs, outputs and metadata)."""

from __future__ import annotations

from pathlib import Path

from stn_face.cli.entry import hydra_command, run_module
from stn_face.errors import InputError, require_input

USAGE = "usage: stn-face-export ckpt=PATH format=onnx|torchscript [output=FILE]"


@hydra_command("export")
def main(cfg) -> Path:
    from stn_face.export import FORMATS, check_export, export
    from stn_face.paths import resolve_checkpoint

    ckpt = require_input(cfg.get("ckpt"), f"missing ckpt=PATH; {USAGE}")
    fmt = str(cfg.get("format") or "")
    if fmt not in FORMATS:
        raise InputError(f"format={fmt or '(none)'} is unknown; use format=onnx or format=torchscript")
    ckpt_path = resolve_checkpoint(ckpt)
    from stn_face.embedder import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint(ckpt_path, device="cpu", trust=bool(cfg.get("trust_checkpoint")))
    output = Path(cfg.output) if cfg.get("output") else ckpt_path.with_suffix(FORMATS[fmt])
    flip = bool(cfg.get("flip", False))
    path = export(embedder, fmt, output, bool(cfg.normalize), int(cfg.opset), int(cfg.batch_size), flip)
    print(f"wrote {path} ({fmt}: images (B, 3, {embedder.image_size}, {embedder.image_size}) normalised "
          f"-> embeddings (B, {embedder.embedding_size}){', L2-normalised' if cfg.normalize or flip else ''}"
          f"{', flip-summed' if flip else ''}; {embedder.transform_name} transform)")
    if cfg.get("check", True):
        diff = check_export(embedder, path, bool(cfg.normalize), int(cfg.batch_size) + 1, flip)
        print(f"check: max |exported - PyTorch| = {diff:.2e} on a batch of {int(cfg.batch_size) + 1}")
    return path


if __name__ == "__main__":
    run_module(main)
