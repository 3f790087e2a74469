"""insightface's verification ``.bin`` files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ``calfw.bin``,
``cplfw.bin``, ...) as :class:`~stn_face.data.eval_sets.VerificationSet` s.

A ``.bin`` is a pickle of ``(images, issame)``: a list of ``2 n`` encoded images (JPEG/PNG bytes of
aligned faces) and a list of ``n`` booleans; pair ``i`` is images ``2 i`` and ``2 i + 1``. insightface
scores it in 10 folds of consecutive pairs (scikit-learn's ``KFold(10, shuffle=False)``: the first
``n mod 10`` folds one pair longer), which is what :func:`consecutive_folds` gives. The threshold
protocol, flip-summed features and metrics are the project's own
(:func:`stn_face.evaluation.scoring.set_metrics`), exactly as for LFW's ``pairs.txt``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stn_face.data.eval_sets import VerificationSet, first_per_fold, register_protocol
from stn_face.data.protocols import Pair
from stn_face.errors import InputError, MissingInputError
from stn_face.files import atomic_write, check_pickle_stream

log = logging.getLogger(__name__)

MAKE_ONE = "make one with `stn-face-pack bin PAIRS IMAGE_ROOT OUT.bin`, or download the set again"


class BinFormatError(InputError, ValueError):
    """A file given as a verification ``.bin`` is not insightface's pickle of ``(images, issame)``."""


# --------------------------------------------------------------------------------------- the file
class _BinUnpickler(pickle.Unpickler):
    """Unpickles plain data only: a ``.bin`` never needs more than bytes, lists, bools and numpy arrays, and
    refusing everything else means a foreign pickle cannot run code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {("_codecs", "encode"), ("builtins", "bytearray"), ("__builtin__", "bytearray"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it holds a {module}.{name} object")


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray, str]:
    """The encoded images, the same-person flags ``(n,)`` and a content digest of a verification ``.bin``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"verification set {path} does not exist; pass eval.path=FILE.bin (e.g. the lfw.bin "
                                "beside an insightface train.rec), or make one with `stn-face-pack bin`")
    data = path.read_bytes()

    def bad(reason: str) -> BinFormatError:
        return BinFormatError(f"{path} is not an insightface verification .bin (a pickle of a list of encoded images "
                              f"and a list of same/different flags): {reason}; {MAKE_ONE}")

    try:
        check_pickle_stream(data, str(path), "pickle")  # lengths and memo indices checked before any allocation
        content = _BinUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise bad(f"cannot unpickle it ({' '.join(str(error).split())})") from None
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise bad(f"it holds a {type(content).__name__}, not an (images, issame) pair")
    images, issame = content
    try:
        kinds = {type(x).__name__ for x in images if not isinstance(x, (bytes, bytearray, np.ndarray))}
        if kinds:
            raise TypeError(f"found {', '.join(sorted(kinds))}")
        images = [x.tobytes() if isinstance(x, np.ndarray) else bytes(x) for x in images]
        flags = np.asarray(list(issame))
    except TypeError as error:
        raise bad(f"its entries are not encoded images and flags ({error})") from None
    if flags.ndim != 1 or not np.isin(flags, (0, 1)).all():
        raise bad("the flags are not booleans")
    if len(images) != 2 * len(flags) or not len(flags):
        raise bad(f"{len(images)} images for {len(flags)} pairs (expected two images per pair)")
    return images, flags.astype(bool), hashlib.sha1(data).hexdigest()[:12]


def write_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> Path:
    """Write a verification ``.bin`` insightface reads (``pickle.load(f, encoding='bytes')``), atomically."""
    path = Path(path).expanduser()
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs")
    with atomic_write(path, "wb") as handle:
        pickle.dump(([bytes(b) for b in images], [bool(s) for s in issame]), handle, protocol=4)
    return path


def pack_pairs(pairs_file: str | Path, image_root: str | Path, output: str | Path,
               max_pairs_per_fold: int | None = None) -> tuple[Path, int]:
    """A ``.bin`` of the pairs of an LFW-style pair file (``pairs.txt``, ``pairsDevTest.txt``), in file order,
    with the images' own bytes from ``image_root``; ``max_pairs_per_fold`` keeps the first same and
    different pairs of every fold (as ``eval.max_pairs_per_fold`` does). Returns the path and pair count."""
    from stn_face.data.protocols import check_images_exist, read_lfw_pairs

    pairs = read_lfw_pairs(pairs_file)
    if max_pairs_per_fold is not None:
        pairs = first_per_fold(pairs, max_pairs_per_fold)
    check_images_exist(pairs, image_root, "lfw")
    root = Path(image_root)
    images = [(root / name).read_bytes() for pair in pairs for name in (pair.left, pair.right)]
    return write_bin(output, images, [p.same for p in pairs]), len(pairs)


def consecutive_folds(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """The fold of each of ``n_pairs`` pairs split into ``n_folds`` consecutive blocks, the first
    ``n_pairs mod n_folds`` one pair longer (insightface's ``KFold(n_folds, shuffle=False)``): ``(n_pairs,)``."""
    if n_pairs < n_folds:
        raise InputError(f"{n_pairs} pairs cannot be split into {n_folds} folds; lower eval.n_folds")
    return np.concatenate([np.full(len(block), fold) for fold, block in
                           enumerate(np.array_split(np.arange(n_pairs), n_folds))]).astype(np.int64)


# ------------------------------------------------------------------------------- the eval set
@register_protocol("bin")
@dataclass
class BinVerificationSet(VerificationSet):
    """A verification ``.bin`` (``pairs_file``; ``path`` is its config alias) scored like ``pairs.txt``.

    :meth:`load` reads the file, :meth:`prepare` writes each needed image (its own bytes, checked to
    decode) once into ``prepared_root/<name>-<digest>/`` and :meth:`resolve` lists those files: from there
    the faces go through the same datasets, transforms and embedders as every other set, read as
    :func:`~stn_face.data.images.read_rgb` reads crops. The images are aligned already: nothing is detected
    and the crop settings are ignored. ``n_folds`` consecutive folds (:func:`consecutive_folds`).

    A ``.bin`` names no people, so :meth:`check_training_identities` cannot apply: its results say
    ``pairs_with_training_identities: null`` (not checked); make sure the training set excludes them.
    """

    path: str | None = None
    bin_dir: str | None = None
    n_folds: int = 10
    digest: str = field(default="", init=False)
    _encoded: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _files: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pairs_file = self.pairs_file or self.path
        if not self.name:
            self.name = Path(str(self.pairs_file)).stem if self.pairs_file else "bin"

    @classmethod
    def missing_file_hint(cls, options: dict[str, Any]) -> str:
        given = f"{options['pairs_file']} does not exist; " if options.get("pairs_file") else ""
        return (f"{given}eval=bin needs eval.path=FILE.bin, an insightface verification .bin such as lfw.bin "
                "(`stn-face-pack bin` makes one from a pair file and images)")

    @classmethod
    def expand_config(cls, cfg: Any) -> list[Any]:
        """``eval.bin_dir=DIR``: one set per ``*.bin`` in the folder, each named by its file."""
        return _expand_bin_dir(cfg)

    def read_pairs(self) -> list[Pair]:
        """The file's pairs, named by image index (``0000``, ``0001``, ...), in ``n_folds`` consecutive folds."""
        if self.bin_dir:
            raise InputError(f"eval.bin_dir={self.bin_dir} names a folder of .bin files, which stn-face-train and "
                             "stn-face-eval expand into one set each; to score one file give eval.path=FILE.bin instead")
        if not self.pairs_file:
            raise InputError("eval=bin needs eval.path=FILE.bin (an insightface verification set such as lfw.bin), "
                             "or eval.bin_dir=DIR to validate on every .bin in a folder")
        images, issame, self.digest = read_bin(self.pairs_file)
        width = len(str(len(images) - 1))
        names = [f"{i:0{width}d}" for i in range(len(images))]
        folds = consecutive_folds(len(issame), self.n_folds)
        self._encoded = dict(zip(names, images))
        return [Pair(names[2 * i], names[2 * i + 1], bool(same), int(fold))
                for i, (same, fold) in enumerate(zip(issame, folds))]

    def load(self) -> BinVerificationSet:
        self.sources = self.set_pairs(self.protocol_pairs(), self.members)
        self._encoded = {name: self._encoded[name] for name in self.sources}
        self._files = {name: name + _extension(data) for name, data in self._encoded.items()}
        return self

    def check_training_identities(self, training_names: Iterable[str]) -> BinVerificationSet:
        log.info("%s: a .bin names no people, so pairs with training identities cannot be found (not checked)",
                 self.name)
        return self

    def _folder(self) -> Path:
        return Path(self.prepared_root) / f"{self.name}-{self.digest}"

    def prepare(self, crop: dict[str, Any] | None = None, workers: int = 2, progress: bool = True) -> None:
        """Write the needed images into :meth:`_folder` (done ones are kept), each checked to decode."""
        from stn_face.data.images import ImageReadError, decode_rgb

        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for name, data in self._encoded.items():
            target = folder / self._files[name]
            if target.is_file() and target.stat().st_size == len(data):
                continue
            try:
                decode_rgb(data, name)
            except ImageReadError as error:
                raise BinFormatError(f"{self.pairs_file}: image {int(name)} (pair {int(name) // 2}) does not decode "
                                     f"({error.reason}); the file is damaged: {MAKE_ONE}") from None
            with atomic_write(target, "wb", fsync=False) as handle:
                handle.write(data)
            written += 1
        if written:
            log.info("%s: %d images of %s written to %s", self.name, written, self.pairs_file, folder)

    def resolve(self) -> BinVerificationSet:
        folder = self._folder()
        items = [folder / self._files[name] for name in self.sources]
        missing = [p for p in items if not p.is_file()]
        if missing:
            raise MissingInputError(f"{self.name}: {len(missing)} of {len(items)} images of {self.pairs_file} are not "
                                    f"in {folder} yet (first: {missing[0].name}); call prepare() first")
        self.items = items
        return self


def _extension(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg"


# ------------------------------------------------------------------------------------ eval configs
def _expand_bin_dir(cfg: Any) -> list[Any]:
    """An eval config with ``bin_dir`` as one config per ``*.bin`` in that folder (sorted, named by file:
    ``val/cfp_fp_acc``); any other config unchanged."""
    from omegaconf import OmegaConf

    bin_dir = cfg.get("bin_dir") if hasattr(cfg, "get") else None
    if not bin_dir:
        return [cfg]
    if cfg.get("path"):
        raise InputError(f"give eval.path={cfg.path} or eval.bin_dir={bin_dir}, not both")
    folder = Path(str(bin_dir)).expanduser()
    files = sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        raise MissingInputError(f"eval.bin_dir={bin_dir} " + ("holds no .bin file" if folder.is_dir() else
                                "is not a folder") + "; point it at a folder of insightface verification sets "
                                "(lfw.bin, cfp_fp.bin, agedb_30.bin, ...)")
    expanded = []
    for file in files:
        one = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        one.path = one.pairs_file = one.image_root = str(file)
        one.name, one.bin_dir = file.stem, None
        expanded.append(one)
    return expanded
