"""Checkpoints: the one place that writes, reads, describes and checks them.

- Writing is atomic (temporary file, fsync, rename): a killed process leaves the old file or the new one.
- Reading has one policy (:func:`safe_torch_load`, used by :func:`load_checkpoint`, Lightning's resume
  through :class:`AtomicCheckpointIO` and the pretrained-weights readers): tensors and plain data only
  (``weights_only=True`` with torch's own allowlist; checkpoints of ``stn-face-train`` need nothing more).
  A file that names code to import is refused with one line (:class:`~stn_face.errors.UntrustedFileError`)
  unless the caller opts in with ``trust=True`` (``trust_checkpoint=true``), which unpickles it in full and
  so runs whatever it says. Before torch reads a file its zip layout is checked (no compressed or
  over-long records), so a damaged or forged file is an error within milliseconds, never an allocation of
  what its header claims.
- A checkpoint describes its network (:func:`model_config`, stored under ``"model_config"``), so it
  rebuilds without the Hydra run folder (:func:`build_network`); only ``stn_face.*`` classes are built.
- Weights that do not fit a network are reported by one function (:func:`weight_mismatch`), whether a
  run resumes (:func:`check_compatible`) or an embedder loads (:func:`load_weights`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from stn_face.errors import CheckpointError, InputError, UntrustedFileError
from stn_face.files import atomic_write, check_zip_archive
from stn_face.paths import resolve_checkpoint

log = logging.getLogger(__name__)

MODEL_CONFIG_KEYS = ("transform", "localization", "backbone", "head")


# ---------------------------------------------------------------------------------------- writing
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically: a killed process leaves the old file or the new one."""
    with atomic_write(path, "wb") as stream:
        torch.save(obj, stream)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic (temporary file + ``os.replace``) and whose loads
    (``trainer.fit(ckpt_path=...)``, ``validate``, ``test``) go through :func:`safe_torch_load`: tensors and
    plain data only unless ``trust=True`` (``trust_checkpoint=true``)."""

    def __init__(self, trust: bool = False) -> None:
        super().__init__()
        self.trust = bool(trust)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # Lightning's weights_only argument is ignored on purpose: only the user's opt-in loosens the policy
        return safe_torch_load(path, trust=self.trust)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)


# ---------------------------------------------------------------------------------------- reading
#: What torch's weights-only unpickler says when a pickle names a global it does not allow.
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
#: The opt-in, as the refusal names it (the command-line option, then the Python argument).
TRUST_HINT = "trust_checkpoint=true (Python: trust=True)"


def safe_torch_load(path: str | os.PathLike, trust: bool = False, what: str = "PyTorch checkpoint") -> Any:
    """The one reader of torch files from users and strangers (checkpoints, ``.pth`` weights): tensors,
    numbers, strings and containers only (``torch.load(weights_only=True)``), onto the CPU.

    - A file whose pickle names anything else to import (a class, ``os.system``, ...) is refused with an
      :class:`~stn_face.errors.UntrustedFileError` naming the file, the import and the opt-in. Nothing of
      it runs.
    - ``trust=True`` reads it in full with ``weights_only=False``: **dangerous**, the file may run any code.
    - A damaged, truncated, empty or forged file is a :class:`CheckpointError` naming the file and the
      problem; its zip layout is checked first, so no header's claim is allocated.
    """
    path = Path(path)
    size = None
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
        size = path.stat().st_size
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a {what}")
    if magic.startswith(b"PK\x03\x04"):
        try:
            check_zip_archive(path, what, stored_only=True, verify_crc=True)
        except InputError as error:  # a damaged or forged archive: a checkpoint error naming the file
            raise CheckpointError(str(error)) from None
    elif magic.startswith(b"\x80"):
        _check_legacy_claims(path, size, what)
    else:  # neither torch's zip format nor its legacy pickle stream
        raise CheckpointError(f"{path} is not a {what} (it starts with {magic!r}, not a zip archive or a "
                              "pickle); pass a .ckpt / .pth file written by torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        found = _GLOBAL.search(str(error))
        if found and not trust:
            name = _python3_name(found.group(1))
            raise UntrustedFileError(
                f"{path} wants to import {name} to load, which could run code; refused (checkpoints and "
                f"weights load as tensors and plain data only). Only if you trust this file and its source, "
                f"pass {TRUST_HINT}: that lets the file run any code") from None
        raise CheckpointError(f"{path} is not a {what} ({_reason(error)})") from None
    except (MemoryError, OverflowError) as error:
        raise CheckpointError(f"{path} is not a {what}: it claims more data than it holds "
                              f"({type(error).__name__})") from None
    except Exception as error:  # noqa: BLE001 - any decoding problem means: not a checkpoint
        raise CheckpointError(f"{path} is not a {what} ({_reason(error)})") from None


def _check_legacy_claims(path: Path, size: int, what: str) -> None:
    """PyTorch's legacy (pre-1.6) format allocates each storage at the size its pickle claims before
    reading it: refuse a claim larger than the file. Its pickles are scanned, never unpickled, through a
    memory map (a read never returns more than the file holds)."""
    import mmap
    import pickletools

    ints = ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG")
    try:
        with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            for _ in range(4):  # magic number, protocol, system info, the object (its storages)
                if view.tell() >= size:  # a plain pickle: torch.load will say what it is
                    break
                memo_storage: set[Any] = set()
                after_storage = last_string = None
                for op, arg, _pos in pickletools.genops(view):
                    if op.name in ("BINPUT", "LONG_BINPUT", "PUT") and last_string == "storage":
                        memo_storage.add(arg)
                    last_string = arg if isinstance(arg, str) and "UNICODE" in op.name else None
                    if last_string == "storage" or (op.name in ("BINGET", "LONG_BINGET", "GET")
                                                    and arg in memo_storage):
                        after_storage = True
                    elif after_storage and op.name in ints:
                        after_storage = None
                        if isinstance(arg, int) and arg > size:
                            raise CheckpointError(f"{path} claims a storage of {arg} elements but the file "
                                                  f"holds {size} bytes (truncated or forged); not a {what}")
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - a pickle stream that does not even scan
        raise CheckpointError(f"{path} is not a {what} (damaged pickle: {_reason(error)})") from None


def _python3_name(dotted: str) -> str:
    """The name a pickle's global stands for under Python 3 (protocol 2 writes ``subprocess.call`` as
    ``commands.call``, ``builtins.exec`` as ``__builtin__.exec``): what unpickling would import."""
    import _compat_pickle
    import builtins

    module, _, name = dotted.rpartition(".")
    if not module and hasattr(builtins, name):  # torch names builtins without their module
        module = "builtins"
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}" if module else dotted


def _reason(error: BaseException) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.split("Check the documentation", 1)[0]
    return " ".join(text.split())[:200] or type(error).__name__


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Read a ``stn-face-train`` checkpoint (a file, a run folder or its ``checkpoints/`` folder) with
    :func:`safe_torch_load` (``trust=True``: in full, dangerous).

    Raises :class:`~stn_face.errors.MissingInputError` for a missing file, :class:`UntrustedFileError`
    for a file that names code to import and :class:`CheckpointError` for a file that is not such a
    checkpoint. ``ckpt["_path"]`` is the file that was read.
    """
    path = resolve_checkpoint(path)
    try:
        ckpt = safe_torch_load(path, trust=trust)
    except UntrustedFileError:
        raise
    except CheckpointError as error:
        raise CheckpointError(f"{error}; pass a .ckpt file written by stn-face-train") from None
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


def checkpoint_model_config(ckpt: Mapping[str, Any], path: str | os.PathLike,
                            allowed_targets: Sequence[str] = ("stn_face.",)) -> dict[str, Any]:
    """The network configs of a checkpoint: its ``model_config``, else the run's ``.hydra/config.yaml``.

    Every ``_target_`` in them must be a ``torch.nn.Module`` class under ``allowed_targets``
    (:func:`check_targets`): Hydra would call whatever they name with the file's arguments."""
    config = ckpt.get("model_config")
    if isinstance(config, dict) and config.get("transform") and config.get("backbone"):
        check_targets(config, str(path), allowed_targets)
        _check_image_sizes(ckpt, config, str(path))
        check_network_size(config, ckpt.get("state_dict"), str(path))
        return config
    path = Path(path)
    for hydra_file in (path.parent.parent / ".hydra" / "config.yaml", path.parent / ".hydra" / "config.yaml"):
        if hydra_file.is_file():
            config = _config_from_hydra_file(hydra_file)
            check_targets(config, str(hydra_file), allowed_targets)
            _check_image_sizes(ckpt, config, str(path))
            check_network_size(config, ckpt.get("state_dict"), str(path))
            return config
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


def check_targets(config: Mapping[str, Any], where: str, allowed_targets: Sequence[str] = ("stn_face.",)) -> None:
    """Refuse a stored network config whose ``_target_`` s (in ``transform``, ``localization``, ``backbone``,
    ``head``) are not ``torch.nn.Module`` classes under ``allowed_targets``: building it would call a
    function named by the file (``os.system``, or one of ours that writes files) with the file's arguments.
    Targets outside ``allowed_targets`` are refused without importing them."""
    targets = [t for key in MODEL_CONFIG_KEYS for t in _targets(config.get(key))]
    foreign = [t for t in targets if not t.startswith(tuple(allowed_targets))]
    if foreign:
        raise CheckpointError(f"the model config of {where} names classes outside {list(allowed_targets)}: "
                              f"{', '.join(foreign)}; pass allowed_targets=... to build them")
    not_modules = [t for t in targets if not _is_module_class(t)]
    if not_modules:
        raise CheckpointError(f"the model config of {where} names {', '.join(not_modules)}, which is not a "
                              "network class (torch.nn.Module); refused: a stored config only builds networks")


def check_network_size(config: Mapping[str, Any], state_dict: Any, where: str) -> None:
    """Build the config's spatial transformer and backbone on PyTorch's ``meta`` device (shapes, no memory)
    and compare them with the checkpoint's tensors before anything is allocated: a stored config claiming
    a gigantic network (widths of 10^5, say) is refused here instead of filling the memory. A config that
    does not build is left for :func:`build_network` to report."""
    if not isinstance(state_dict, Mapping):
        return
    from hydra.utils import instantiate

    from stn_face.nn.embedding import EmbeddingNet

    try:
        with torch.device("meta"):
            expected = EmbeddingNet(instantiate(config["transform"]), instantiate(config["backbone"])).state_dict()
    except Exception:  # noqa: BLE001 - reported, with the reason, when the network is built
        return
    saved = {k: v for k, v in state_dict.items() if k.startswith(("transformer.", "backbone."))}
    problems = weight_mismatch(expected, saved)
    if problems:
        raise CheckpointError(f"{where} holds weights of another architecture than its config describes: "
                              f"{'; '.join(problems)}")


#: The largest input side a checkpoint may ask images to be resized or cropped to.
MAX_IMAGE_SIDE = 4096


def _check_image_sizes(ckpt: Mapping[str, Any], config: Mapping[str, Any], where: str) -> None:
    data_state = ckpt.get("FaceDataModule") if isinstance(ckpt.get("FaceDataModule"), Mapping) else {}
    crop = config.get("crop") if isinstance(config.get("crop"), Mapping) else {}
    for label, value in (("image_size", data_state.get("image_size")), ("image_size", config.get("image_size")),
                         ("crop size", crop.get("size"))):
        if value is not None and not (isinstance(value, int) and 1 <= value <= MAX_IMAGE_SIDE):
            raise CheckpointError(f"{where} asks for an input {label} of {value!r} pixels (1 to {MAX_IMAGE_SIDE}): "
                                  "a damaged or forged checkpoint")


def _is_module_class(target: str) -> bool:
    """Whether ``target`` (``package.module.Name``) names a ``torch.nn.Module`` subclass."""
    import importlib
    import inspect

    module_name, _, name = target.rpartition(".")
    while module_name:
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            name = f"{outer}.{name}"
            continue
        for part in name.split("."):
            found = getattr(found, part, None)
        return inspect.isclass(found) and issubclass(found, nn.Module)
    return False


def build_network(config: Mapping[str, Any], where: str = "the checkpoint",
                  allowed_targets: Sequence[str] = ("stn_face.",)):
    """Instantiate the :class:`~stn_face.nn.EmbeddingNet` (spatial transformer + backbone) of a
    ``model_config``.

    Only ``torch.nn.Module`` classes under ``allowed_targets`` (module prefixes) are built, so a checkpoint
    cannot make us call arbitrary functions, ours included (it is read with ``weights_only``)."""
    from hydra.utils import instantiate

    from stn_face.nn.embedding import EmbeddingNet

    for key in ("transform", "backbone"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"the model config of {where} has no `{key}` section")
    check_targets(config, where, allowed_targets)
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
def weight_mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any], source: str = "checkpoint",
                    optional: tuple[str, ...] = ()) -> list[str]:
    """What differs between a network's ``state_dict`` (``expected``) and saved weights (from the
    ``source``: a checkpoint, a pretrained weights file): one phrase per kind (missing, not in the model,
    other shape), each naming the first few tensors. Empty when they fit. Tensors whose names end with one
    of ``optional`` may be absent (BatchNorm's ``num_batches_tracked`` in other projects' files)."""
    missing = sorted(k for k in set(expected) - set(saved) if not k.endswith(optional))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = [f"{k} {tuple(saved[k].shape)} in the {source} vs {tuple(expected[k].shape)} in the model"
                for k in sorted(set(saved) & set(expected))
                if hasattr(saved[k], "shape") and saved[k].shape != expected[k].shape]
    problems = []
    for label, items in ((f"missing in the {source}", missing), ("not in this model", unexpected),
                         ("of another shape", reshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} tensors {label}: {', '.join(items[:3])}{more}")
    return problems


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint does not fit the model built from the current config."""


#: state-dict prefixes that name a module twice: before 2026-12 ``StnFaceModule`` kept its backbone also
#: as ``_backbone_forward``, so its checkpoints hold every backbone tensor under both names
ALIAS_PREFIXES = ("_backbone_forward.",)


def drop_aliases(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Remove (in place) the duplicate tensors of :data:`ALIAS_PREFIXES` from a checkpoint's state dict;
    returns it."""
    for key in [k for k in state_dict if k.startswith(ALIAS_PREFIXES)]:
        del state_dict[key]
    return state_dict


def check_compatible(model: nn.Module, path: str | os.PathLike, trust: bool = False) -> None:
    """Raise :class:`CheckpointMismatchError` listing what differs between a checkpoint's weights and
    ``model`` (missing/unexpected tensors, shape changes), instead of PyTorch's long load error."""
    try:
        checkpoint = load_checkpoint(path, trust=trust)
    except UntrustedFileError:
        raise
    except CheckpointError as error:
        raise CheckpointMismatchError(str(error)) from None
    problems = weight_mismatch(model.state_dict(), drop_aliases(dict(checkpoint["state_dict"])))
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
