"""Export the embedder (spatial transformer + backbone) as one ONNX or TorchScript graph (the command is
``stn-face-export ckpt=PATH format=onnx|torchscript``).

The exported model is the spatial transformer + backbone (no margin head): input ``images``, a float
batch ``(B, 3, S, S)`` normalised like training (RGB, ``(pixel / 255 - 0.5) / 0.5``, ``S`` the
checkpoint's ``image_size``, usually 128), output ``embeddings`` ``(B, D)``, L2-normalised
(``normalize=false``: raw backbone outputs), without flip: the paper's test feature is
``normalise(f(x) + f(mirror(x)))`` of two calls. The batch dimension is dynamic.

ONNX uses the TorchScript-based exporter (``dynamo=False``; opset >= 16 for ``GridSample``), and is
checked with onnxruntime against PyTorch on a batch of another size. The settings a consumer needs
(image size, normalisation, embedding size, threshold) are stored as ONNX ``metadata_props`` / as
the TorchScript extra file ``stn_face.json``.

Examples::

    stn-face-export ckpt=logs/train/runs/.../checkpoints/last.ckpt format=onnx
    stn-face-export ckpt=last.ckpt format=torchscript output=embedder.pt
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stn_face.data.images import MEAN, STD
from stn_face.errors import InputError
from stn_face.nn.embedding import flip_sum

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
MIN_OPSET = 16  # GridSample


class ExportedEmbedder(nn.Module):
    """``(B, 3, S, S)`` normalised images -> ``(B, D)`` embeddings (L2-normalised when ``normalize``);
    with ``flip`` the graph computes the paper's flip-sum feature itself (always normalised)."""

    def __init__(self, net: nn.Module, normalize: bool = True, flip: bool = False) -> None:
        super().__init__()
        self.net = net
        self.normalize = normalize
        self.flip = flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.flip:
            return flip_sum(self.net, images)
        embeddings = self.net(images)
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings


def export_metadata(embedder, normalize: bool, fmt: str, flip: bool = False) -> dict[str, Any]:
    return {
        "format": fmt,
        "input": f"images: float32 (B, 3, S, S), RGB, (pixel / 255 - {MEAN[0]}) / {STD[0]}",
        "output": "embeddings: float32 (B, D)" + (", L2-normalised" if normalize else ""),
        "image_size": embedder.image_size,
        "embedding_size": embedder.embedding_size,
        "normalized": normalize,
        "mean": list(MEAN),
        "std": list(STD),
        "transform": embedder.transform_name,
        "threshold": embedder.threshold,
        "threshold_set": embedder.threshold_set,
        "crop": embedder.crop_settings,
        "flip": ("included: embeddings = normalise(normalise(f(x)) + normalise(f(mirror(x))))" if flip else
                 "not included: feature = normalise(normalise(f(x)) + normalise(f(mirror(x))))"),
        "checkpoint": embedder.checkpoint_path,
    }


def _example(embedder, batch_size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = embedder.image_size
    return torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1


def export_onnx(embedder, path: str | Path, normalize: bool = True, opset: int = 17, batch_size: int = 2,
                flip: bool = False) -> Path:
    """Write the embedder as ONNX with a dynamic batch dimension."""
    import onnx

    if opset < MIN_OPSET:
        raise InputError(f"opset={opset} is too old: grid_sample needs ONNX opset {MIN_OPSET} or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ExportedEmbedder(embedder.net, normalize, flip).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks (fixed S) and the legacy exporter
        torch.onnx.export(model, (_example(embedder, batch_size).to(embedder.device),), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
    embedder.net.eval()
    proto = onnx.load(str(path))
    for key, value in export_metadata(embedder, normalize, "onnx", flip).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(embedder, path: str | Path, normalize: bool = True, batch_size: int = 2,
                       flip: bool = False) -> Path:
    """Write the embedder as a traced TorchScript module (dynamic batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ExportedEmbedder(embedder.net, normalize, flip).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(embedder, batch_size).to(embedder.device), check_trace=False)
    embedder.net.eval()
    extra = {"stn_face.json": json.dumps(export_metadata(embedder, normalize, "torchscript", flip), indent=2)}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def run_exported(path: str | Path, images: torch.Tensor) -> np.ndarray:
    """Embeddings of a normalised batch from an exported file (onnxruntime or TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images.numpy().astype(np.float32)})[0]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(images).numpy()


def check_export(embedder, path: str | Path, normalize: bool = True, batch_size: int = 3, flip: bool = False) -> float:
    """Max absolute difference between the exported model and PyTorch on a random batch."""
    images = _example(embedder, batch_size, seed=1)
    with torch.no_grad():
        expected = ExportedEmbedder(embedder.net, normalize, flip).eval()(images.to(embedder.device)).cpu().numpy()
    return float(np.abs(run_exported(path, images) - expected).max())


def export(embedder, fmt: str, output: str | Path, normalize: bool = True, opset: int = 17,
           batch_size: int = 2, flip: bool = False) -> Path:
    if fmt == "onnx":
        return export_onnx(embedder, output, normalize, opset, batch_size, flip)
    if fmt == "torchscript":
        return export_torchscript(embedder, output, normalize, batch_size, flip)
    raise InputError(f"format={fmt} is unknown; use format=onnx or format=torchscript")
