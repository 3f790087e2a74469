"""Reader of dlib's DNN serialization (``dlib_face_recognition_resnet_model_v1.dat``) for
:class:`~stn_face.nn.dlib_resnet.DlibResNet`.

The format, as dlib writes it (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``input.h``,
``dlib/cuda/tensor.h``):

- an integer is one control byte (low nibble: byte count 1-8, bit 0x80: negative) and that many
  little-endian magnitude bytes; a string is its length (an integer) and its bytes; a bool is the
  character ``'1'`` or ``'0'``; a float is a mantissa (int64) and a binary exponent (int16), both integers;
- a tensor is a version (2), four dimensions (samples, channels, rows, columns) and the values as
  little-endian float32; an ``alias_tensor`` (a view into a layer's parameter tensor) is a version (1)
  and four dimensions;
- a network is nested: ``add_loss_layer`` writes its version, the loss and then its sub-network; every
  ``add_layer`` writes its version, then its sub-network, then its layer (a version string and the
  layer's fields) and some training state (flags and tensors, skipped here); ``tag`` and ``skip``
  layers write a version and their sub-network. So the file holds every wrapper's version from the
  output down, then the layers from the input up.

Nothing here executes anything from the file: it is parsed as numbers, strings and float32 arrays,
and every length and tensor size is checked against the bytes left before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

#: The first bytes of a dlib network with a ``loss_metric`` output: version 1 of ``add_loss_layer``,
#: then the string ``loss_metric``.
MAGIC = b"\x01\x01\x01\x0d" + b"loss_metric_"
MAGIC_PREFIX = b"\x01\x01\x01"
#: dlib's face networks are 5-100 MB; a larger file is not one of them and is not read into memory.
MAX_FILE_BYTES = 1 << 30

# float_details' exponents for the special values
_SPECIAL_EXPONENTS = {32000: "inf", 32001: "-inf", 32002: "nan"}


class DlibFormatError(ValueError):
    """The bytes are not the dlib network expected; the message says what was found where."""


@dataclass
class DlibLayer:
    """One layer with parameters as stored: ``kind`` (``con``, ``affine``, ``fc``), its tensors and the
    geometry it was stored with (kernel, stride, padding)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, int] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """What :func:`read_dlib_network` found: the input layer's means, its size, the loss and the layers
    with parameters from the input up."""

    pixel_mean: tuple[float, float, float]
    input_size: tuple[int, int] | None
    loss: str
    layers: list[DlibLayer]


# ------------------------------------------------------------------------------ primitive reader
class _Stream:
    def __init__(self, data: memoryview, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"at byte {self.pos} of {len(self.data)}: {message}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int) -> memoryview:
        if count < 0 or count > self.remaining():
            raise self.fail(f"needs {count} more bytes, {self.remaining()} left (truncated file?)")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self, signed: bool = True, what: str = "integer") -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"{what}: byte 0x{control:02x} is not a dlib integer header")
        value = int.from_bytes(self.take(size), "little")
        if control & 0x80:
            if not signed:
                raise self.fail(f"{what}: negative value for an unsigned field")
            value = -value
        return value

    def string(self, max_length: int = 256) -> str:
        length = self.integer(signed=False, what="string length")
        if length > max_length:
            raise self.fail(f"a string of {length} bytes where a short layer name belongs")
        raw = bytes(self.take(length))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"a layer name that is not text ({raw[:20]!r})") from None

    def boolean(self) -> bool:
        char = self.take(1)[0]
        if char not in (ord("0"), ord("1")):
            raise self.fail(f"byte 0x{char:02x} is not a dlib bool ('0' or '1')")
        return char == ord("1")

    def real(self) -> float:
        if self.remaining() and self.data[self.pos] & 0x70:
            raise self.fail("a floating-point number in dlib's old text format (not supported)")
        mantissa = self.integer(what="float mantissa")
        exponent = self.integer(what="float exponent")
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        if abs(exponent) > 2000:
            raise self.fail(f"float exponent {exponent} out of range")
        return float(mantissa) * 2.0 ** exponent

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.integer(what=f"{what} dimension") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"{what} with negative dimensions {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self, keep: bool = True) -> torch.Tensor | None:
        version = self.integer(what="tensor version")
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        dims = self._dims("tensor")
        count = int(np.prod(dims, dtype=object))
        if count * 4 > self.remaining():  # checked before anything is allocated
            raise self.fail(f"a tensor of shape {dims} needs {count * 4} bytes, only {self.remaining()} left "
                            "(truncated or not a dlib file)")
        chunk = self.take(count * 4)
        if not keep:
            return None
        values = np.frombuffer(chunk, dtype="<f4", count=count).astype(np.float32)
        return torch.from_numpy(values.reshape(dims))

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer(what="alias_tensor version")
        if version != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        return self._dims("alias_tensor")


# ------------------------------------------------------------------------------ network layout
def network_layout(widths: Sequence[int], units: Sequence[int]) -> list[str]:
    """The wrappers of dlib's face recognition network from the output down, as dlib nests them:
    ``fc``, ``avg_pool_all`` (over the whole input), the residual units from the last, ``max_pool``, ``relu``,
    ``affine`` and the input convolution (``input_con``). Layer names are the ``add_layer`` wrappers,
    ``tag`` and ``skip`` the wrappers that hold no layer."""
    unit_down = ["relu", "add_prev", "avg_pool", "skip", "tag", "affine", "con", "relu", "affine", "con", "tag"]
    unit_plain = ["relu", "add_prev", "affine", "con", "relu", "affine", "con", "tag"]
    bottom_up_units = [stage > 0 and index == 0 for stage, count in enumerate(units) for index in range(count)]
    layout = ["fc", "avg_pool_all"]
    for downsample in reversed(bottom_up_units):
        layout += unit_down if downsample else unit_plain
    return layout + ["max_pool", "relu", "affine", "input_con"]


# ------------------------------------------------------------------------------ layers
def _con(stream: _Stream) -> DlibLayer:
    version = stream.string()
    if version not in ("con_4", "con_5", "con_6"):
        raise stream.fail(f"found layer '{version}' where a convolution (con_4/5/6) belongs")
    params = stream.tensor()
    num_filters = stream.integer(what="num_filters")
    rows, cols = stream.integer(), stream.integer()
    stride_y, stride_x = stream.integer(), stream.integer()
    pad_y, pad_x = stream.integer(), stream.integer()
    filters, biases = stream.alias(), stream.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        stream.real()
    use_bias = stream.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6":
        stream.boolean()  # use_relu: a fused relu, only set by dlib's own graph optimisations
    n_filters = int(np.prod(filters))
    n_biases = int(np.prod(biases)) if use_bias else 0
    if params.numel() != n_filters + n_biases or filters[0] != num_filters:
        raise stream.fail(f"convolution parameters of {params.numel()} values do not hold filters {filters} "
                          f"and biases {biases}")
    flat = params.reshape(-1)
    tensors = {"weight": flat[:n_filters].reshape(filters)}
    if use_bias:
        tensors["bias"] = flat[n_filters:].clone()
    return DlibLayer("con", tensors, {"kernel": rows, "kernel_x": cols, "stride": stride_y,
                                      "stride_x": stride_x, "padding": pad_y, "padding_x": pad_x})


def _affine(stream: _Stream) -> DlibLayer:
    version = stream.string()
    if version not in ("affine_", "affine_2"):
        hint = " (a training network with BatchNorm; dlib converts it when it loads the net)" \
            if version.startswith("bn_") else ""
        raise stream.fail(f"found layer '{version}' where an affine layer belongs{hint}")
    params = stream.tensor()
    gamma, beta = stream.alias(), stream.alias()
    mode = stream.integer(what="affine mode")
    if version == "affine_2":
        stream.boolean()  # disabled: dlib's graph optimisation folded it into the convolution before
    n_gamma, n_beta = int(np.prod(gamma)), int(np.prod(beta))
    if params.numel() != n_gamma + n_beta or n_gamma != n_beta:
        raise stream.fail(f"affine parameters of {params.numel()} values do not hold gamma {gamma} and beta {beta}")
    flat = params.reshape(-1)
    return DlibLayer("affine", {"weight": flat[:n_gamma].clone(), "bias": flat[n_gamma:].clone()},
                     {"mode": mode})


def _fc(stream: _Stream) -> DlibLayer:
    version = stream.string()
    if version not in ("fc_2", "fc_3"):
        raise stream.fail(f"found layer '{version}' where a fully connected layer (fc_2/3) belongs")
    num_outputs = stream.integer(signed=False, what="num_outputs")
    num_inputs = stream.integer(signed=False, what="num_inputs")
    params = stream.tensor()
    weights, _biases = stream.alias(), stream.alias()  # the bias alias: read to move past it
    bias_mode = stream.integer(what="bias mode")  # 0: with bias, 1: fc_no_bias
    for _ in range(4):
        stream.real()
    use_bias = stream.boolean() if version == "fc_3" else True
    n_weights = num_inputs * num_outputs
    has_bias = bias_mode == 0 and use_bias
    if tuple(weights) != (num_inputs, num_outputs, 1, 1) or params.numel() != n_weights + (num_outputs if has_bias else 0):
        raise stream.fail(f"fully connected parameters of {params.numel()} values do not fit {num_inputs} inputs "
                          f"x {num_outputs} outputs")
    flat = params.reshape(-1)
    # dlib computes input (1 x num_inputs) @ W (num_inputs x num_outputs); torch's Linear holds W^T
    tensors = {"weight": flat[:n_weights].reshape(num_inputs, num_outputs).t().contiguous()}
    if has_bias:
        tensors["bias"] = flat[n_weights:].clone()
    return DlibLayer("fc", tensors)


def _pool(kind: str, geometry: tuple[int, ...]):
    def read(stream: _Stream) -> None:
        version = stream.string()
        if version != f"{kind}_2":
            raise stream.fail(f"found layer '{version}' where {kind}_2 belongs")
        found = tuple(stream.integer() for _ in range(6))  # window rows, columns, strides, paddings
        if found != geometry:
            raise stream.fail(f"{kind} with window/stride/padding {found}, the network has {geometry}")
    return read


def _named(name: str, *accepted: str):
    def read(stream: _Stream) -> None:
        version = stream.string()
        if version not in accepted:
            raise stream.fail(f"found layer '{version}' where {name} belongs")
        if version.endswith("_2"):
            stream.boolean()  # relu_2: disabled flag
    return read


_LAYER_READERS = {
    "con": _con, "input_con": _con, "affine": _affine, "fc": _fc,
    "relu": _named("relu", "relu_", "relu_2"), "add_prev": _named("add_prev", "add_prev_"),
    # dlib's defaults: a pooling with stride 2 has no padding; window 0 pools the whole input
    "max_pool": _pool("max_pool", (3, 3, 2, 2, 0, 0)), "avg_pool": _pool("avg_pool", (2, 2, 2, 2, 0, 0)),
    "avg_pool_all": _pool("avg_pool", (0, 0, 1, 1, 0, 0)),
}


def _loss(stream: _Stream) -> str:
    version = stream.integer(what="add_loss_layer version")
    if version != 1:
        raise stream.fail(f"add_loss_layer version {version}, expected 1")
    name = stream.string()
    if name == "loss_metric_2":
        stream.real(), stream.real()  # margin, distance threshold
    elif name != "loss_metric_":
        raise stream.fail(f"the network ends in '{name}', not dlib's metric loss (loss_metric)")
    return name


def _input_layer(stream: _Stream) -> tuple[tuple[float, float, float], tuple[int, int] | None]:
    name = stream.string()
    if name not in ("input_rgb_image", "input_rgb_image_sized"):
        raise stream.fail(f"the network's input is '{name}', not an RGB image (input_rgb_image_sized)")
    mean = (stream.real(), stream.real(), stream.real())
    size = None
    if name == "input_rgb_image_sized":
        size = (stream.integer(signed=False), stream.integer(signed=False))
    return mean, size


def _training_state(stream: _Stream, tensors: int) -> None:
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        stream.boolean()
    for _ in range(tensors):  # gradients and cached outputs
        stream.tensor(keep=False)


def parse_network(data: memoryview, widths: Sequence[int], units: Sequence[int], where: str = "") -> DlibNetwork:
    """Parse the bytes of a dlib face recognition network with the given stage ``widths``/``units``."""
    stream = _Stream(data, where)
    loss = _loss(stream)
    layout = network_layout(widths, units)
    versions = []
    for wrapper in layout:
        version = stream.integer(what=f"{wrapper} version")
        allowed = {"tag": (1,), "skip": (1,), "input_con": (2, 3)}.get(wrapper, (1, 2))
        if version not in allowed:
            raise stream.fail(f"version {version} for a {wrapper} wrapper (expected {allowed}): the file nests "
                              "its layers differently from dlib's face recognition ResNet")
        versions.append(version)
    pixel_mean, input_size = _input_layer(stream)
    layers: list[DlibLayer] = []
    for wrapper, version in reversed(list(zip(layout, versions))):
        if wrapper in ("tag", "skip"):
            continue
        layer = _LAYER_READERS[wrapper](stream)
        if layer is not None:
            layers.append(layer)
        if wrapper == "input_con":  # x_grad, cached_output, grad_final [, sample expansion factor]
            _training_state(stream, 3)
            if version >= 3:
                stream.integer(what="sample expansion factor")
        else:  # x_grad, cached_output [, params_grad]
            _training_state(stream, 3 if version == 2 else 2)
    if stream.remaining():
        raise stream.fail(f"{stream.remaining()} bytes left after the network")
    return DlibNetwork(pixel_mean, input_size, loss, layers)


def read_dlib_network(path: str | Path, widths: Sequence[int], units: Sequence[int]) -> DlibNetwork:
    """Read a dlib ``.dat`` face recognition network; raises :class:`DlibFormatError` naming the byte
    where it stops fitting."""
    size = Path(path).stat().st_size
    if size == 0:
        raise DlibFormatError("the file is empty")
    if size > MAX_FILE_BYTES:
        raise DlibFormatError(f"{size} bytes is larger than any dlib face network ({MAX_FILE_BYTES} at most)")
    return parse_network(memoryview(Path(path).read_bytes()), widths, units, str(path))


def looks_like_dlib(head: bytes) -> bool:
    """Whether a file's first bytes are a dlib network with a metric loss (the face recognition nets)."""
    return head.startswith(MAGIC_PREFIX) and b"loss_" in head[:32]
