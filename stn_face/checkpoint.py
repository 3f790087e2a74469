"""Checkpoints: the one place that writes, reads, describes and checks them.

- Writing is atomic (temporary file, fsync, rename): a killed process leaves the old file or the new one.
- Reading has one policy (:func:`load_checkpoint`): tensors, numbers and strings only
  (``weights_only=True``); an older file holding other objects is read in full with a warning.
- A checkpoint describes its network (:func:`model_config`, stored under ``"model_config"``), so it
  rebuilds without the Hydra run folder (:func:`build_network`); only ``stn_face.*`` classes are built.
- Weights that do not fit a network are reported by one function (:func:`weight_mismatch`), whether a
  run resumes (:func:`check_compatible`) or an embedder loads (:func:`load_weights`).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from stn_face.errors import CheckpointError
from stn_face.files import atomic_write
from stn_face.paths import resolve_checkpoint

log = logging.getLogger(__name__)

MODEL_CONFIG_KEYS = ("transform", "localization", "backbone", "head")


# ---------------------------------------------------------------------------------------- writing
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically: a killed process leaves the old file or the new one."""
    with atomic_write(path, "wb") as stream:
        torch.save(obj, stream)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic (temporary file + ``os.replace``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)


# ---------------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``stn-face-train`` checkpoint (a file, a run folder or its ``checkpoints/`` folder).

    Raises :class:`~stn_face.errors.MissingInputError` for a missing file and :class:`CheckpointError`
    for a file that is not such a checkpoint. ``ckpt["_path"]`` is the file that was read.
    """
    path = resolve_checkpoint(path)
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "Unsupported global" not in str(error) and "can still be loaded" not in str(error):
                raise
            log.warning("%s holds objects besides tensors; loading it in full (only do this with files "
                        "you trust)", path)
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any decoding problem means: not a checkpoint
        text = str(error)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        reason = " ".join(text.split())[:200] or type(error).__name__
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({reason}); pass a .ckpt file written by "
                              "stn-face-train") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a stn-face-train checkpoint (it has no `state_dict`); pass a "
                              ".ckpt file from <run>/checkpoints/")
    ckpt["_path"] = str(path)
    return ckpt


def checkpoint_step(ckpt: Mapping[str, Any]) -> int | None:
    """The optimiser step at which the checkpoint was written."""
    step = ckpt.get("global_step")
    return int(step) if step is not None else None


# ------------------------------------------------------------------------------ network description
def model_config(cfg: Any) -> dict[str, Any]:
    """The resolved configs that rebuild the network of a training config (an OmegaConf ``DictConfig``),
    stored in checkpoints by :meth:`StnFaceModule.on_save_checkpoint`."""
    from omegaconf import OmegaConf

    import stn_face.config  # noqa: F401 - registers the ${stn_face.*:} resolvers

    result: dict[str, Any] = {"format": 1}
    for key in MODEL_CONFIG_KEYS:
        if cfg.get(key) is not None:
            result[key] = OmegaConf.to_container(cfg[key], resolve=True)
    data = cfg.get("data") or {}
    result["image_size"] = data.get("image_size")
    crop = data.get("crop")
    result["crop"] = OmegaConf.to_container(crop, resolve=True) if crop is not None else None
    return result


def checkpoint_model_config(ckpt: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The network configs of a checkpoint: its ``model_config``, else the run's ``.hydra/config.yaml``."""
    config = ckpt.get("model_config")
    if isinstance(config, dict) and config.get("transform") and config.get("backbone"):
        return config
    path = Path(path)
    for hydra_file in (path.parent.parent / ".hydra" / "config.yaml", path.parent / ".hydra" / "config.yaml"):
        if hydra_file.is_file():
            return _config_from_hydra_file(hydra_file)
    raise CheckpointError(
        f"{path} does not say which network it holds: it has no `model_config` (checkpoints of "
        "stn-face-train store one) and no .hydra/config.yaml was found in its run folder; it may come from "
        "another program or architecture")


def _config_from_hydra_file(hydra_file: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        result = model_config(OmegaConf.load(hydra_file))
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"cannot read the network config from {hydra_file}: {error}") from None
    if not result.get("transform") or not result.get("backbone"):
        raise CheckpointError(f"{hydra_file} describes no `transform` and `backbone`: not a stn-face-train run")
    result["source"] = str(hydra_file)
    return result


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [str(node["_target_"])] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


def build_network(config: Mapping[str, Any], where: str = "the checkpoint",
                  allowed_targets: Sequence[str] = ("stn_face.",)):
    """Instantiate the :class:`~stn_face.nn.EmbeddingNet` (spatial transformer + backbone) of a
    ``model_config``.

    Only classes under ``allowed_targets`` (module prefixes) are built, so a checkpoint cannot make us
    call arbitrary functions (it is read with ``weights_only``)."""
    from hydra.utils import instantiate

    from stn_face.nn.embedding import EmbeddingNet

    for key in ("transform", "backbone"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"the model config of {where} has no `{key}` section")
        foreign = [t for t in _targets(config[key]) if not t.startswith(tuple(allowed_targets))]
        if foreign:
            raise CheckpointError(f"the model config of {where} names classes outside {list(allowed_targets)}: "
                                  f"{', '.join(foreign)}; pass allowed_targets=... to build them")
    try:
        transformer = instantiate(config["transform"])
        backbone = instantiate(config["backbone"])
    except Exception as error:  # noqa: BLE001 - a config that does not build is a bad input
        message = " ".join(str(error).split())[:300]
        raise CheckpointError(f"the network config of {where} does not build with this version of stn_face: "
                              f"{message}") from None
    if not hasattr(backbone, "embedding_size"):
        raise CheckpointError(f"the backbone of {where} does not expose `embedding_size`")
    return EmbeddingNet(transformer, backbone)


# -------------------------------------------------------------------------------------- weights
def weight_mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """What differs between a network's ``state_dict`` (``expected``) and saved weights: one phrase per
    kind (missing, unexpected, reshaped), each naming the first few tensors. Empty when they fit."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = [f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(expected[k].shape)}"
                for k in sorted(set(saved) & set(expected))
                if hasattr(saved[k], "shape") and saved[k].shape != expected[k].shape]
    problems = []
    for label, items in (("missing in checkpoint", missing), ("not in this model", unexpected),
                         ("different shape", reshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return problems


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint does not fit the model built from the current config."""


def check_compatible(model: nn.Module, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointMismatchError` listing what differs between a checkpoint's weights and
    ``model`` (missing/unexpected tensors, shape changes), instead of PyTorch's long load error."""
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointMismatchError(str(error)) from None
    problems = weight_mismatch(model.state_dict(), checkpoint["state_dict"])
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained with another architecture: " + "; ".join(problems)
            + ". Use the transform/localization/backbone/head configs it was trained with (see .hydra/config.yaml "
            "in its run folder).")


def load_weights(net: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Copy the ``transformer.*`` and ``backbone.*`` weights into an ``EmbeddingNet``; a mismatch is a
    :class:`CheckpointError` naming the tensors."""
    wanted = {k: v for k, v in state_dict.items() if k.startswith(("transformer.", "backbone."))}
    problems = weight_mismatch(net.state_dict(), wanted)
    if problems:
        describe = (f"{net.transformer.transform_name} transform, {type(net.backbone).__name__} backbone"
                    if hasattr(net.transformer, "transform_name") else type(net.backbone).__name__)
        raise CheckpointError(f"{where} holds weights of another architecture than its config describes "
                              f"({describe}): {'; '.join(problems)}")
    net.load_state_dict(wanted)


def stored_threshold(ckpt: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The accuracy-maximising LFW threshold the verification callback saved (View 2 ``lfw`` first, then
    any other ``lfw*`` set) and the set's name; ``(None, None)`` when there is none."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if not str(key).startswith("VerificationCallback") or not isinstance(state, dict):
            continue
        best = state.get("best") or {}
        names = sorted((n for n in best if str(n).startswith("lfw")), key=lambda n: (n != "lfw", n))
        for name in names:
            value = (best[name] or {}).get("best_threshold")
            if value is not None:
                return float(value), name
    return None, None
