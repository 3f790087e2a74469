"""Reader of insightface arcface_torch's IResNet ``backbone.pth`` for :class:`~stn_face.nn.IResNet`.

arcface_torch saves a plain state dict (``torch.save(backbone.state_dict())``) in its own key layout:
``conv1``, ``bn1``, ``prelu``, ``layer{1-4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}``,
``bn2``, ``fc``, ``features``. It is read with tensors only (``torch.load(weights_only=True)``) and its
keys are renamed to the project's IResNet; the blocks per stage say which depth the file holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

#: arcface_torch's released depths: units per stage -> the backbone option that builds them.
DEPTHS = {(2, 2, 2, 2): "iresnet18", (3, 4, 6, 3): "iresnet34", (3, 4, 14, 3): "iresnet50",
          (3, 13, 30, 3): "iresnet100", (6, 26, 60, 6): "iresnet200"}

_BLOCK_PARTS = {"bn1": "body.0", "conv1": "body.1", "bn2": "body.2", "prelu": "body.3", "conv2": "body.4",
                "bn3": "body.5", "downsample.0": "shortcut.0", "downsample.1": "shortcut.1"}
_TOP_PARTS = {"conv1": "stem.0", "bn1": "stem.1", "prelu": "stem.2", "bn2": "head.bn2d", "fc": "head.fc",
              "features": "head.bn1d"}
_BLOCK_KEY = re.compile(r"^layer([1-9])\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_TOP_KEY = re.compile(r"^([a-z0-9_]+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict, tensors only; a ``module.`` prefix (DataParallel) is dropped. Raises
    ``ValueError`` for a file that is not a state dict of tensors.

    The file goes through the project's one reader of torch files (:func:`stn_face.checkpoint.safe_torch_load`:
    ``weights_only``, its zip layout or legacy storages checked against the file size first), so a file
    that names code to import is refused and a damaged or forged one fails before anything is allocated."""
    from stn_face.checkpoint import safe_torch_load

    state = safe_torch_load(path, what="PyTorch state dict (backbone.pth)")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict of tensors")
    result = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        result[str(key)[len("module."):] if str(key).startswith("module.") else str(key)] = value
    if not result:
        raise ValueError("it holds no tensors")
    return result


def is_arcface_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state and "prelu.weight" in state and any(k.startswith("layer1.0.") for k in state)


def stage_units(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Blocks per stage of an arcface_torch-layout state dict (``layer1`` ... ``layerN``)."""
    counts: dict[int, int] = {}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            counts[stage] = max(counts.get(stage, 0), index + 1)
    return tuple(counts[s] for s in sorted(counts))


def fitting_option(state: Mapping[str, torch.Tensor]) -> str | None:
    """The backbone option whose network the file holds (``iresnet50``...), or None."""
    return DEPTHS.get(stage_units(state))


def to_iresnet(state: Mapping[str, torch.Tensor], layers: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """arcface_torch keys -> the project's IResNet keys (``stem``, ``blocks.<flat index>``, ``head``) for a
    network with ``layers`` blocks per stage. Keys that fit no rule keep their name (and are reported
    as not in this model)."""
    offsets = [sum(layers[:i]) for i in range(len(layers))]
    result: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = _BLOCK_KEY.match(key)
        top = _TOP_KEY.match(key)
        if block and int(block.group(1)) <= len(layers) and block.group(3) in _BLOCK_PARTS:
            stage, index, part, leaf = int(block.group(1)), int(block.group(2)), block.group(3), block.group(4)
            flat = offsets[stage - 1] + index if index < layers[stage - 1] else f"{stage}.{index}(extra)"
            result[f"blocks.{flat}.{_BLOCK_PARTS[part]}.{leaf}"] = value
        elif top and top.group(1) in _TOP_PARTS:
            result[f"{_TOP_PARTS[top.group(1)]}.{top.group(2)}"] = value
        else:
            result[key] = value
    return result
