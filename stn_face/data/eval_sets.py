"""Verification sets: a protocol file, the images it names, and their prepared crops; and the registry
of verification protocols.

A :class:`VerificationSet` turns a pair file into what an embedder needs: a flat list of crop
paths (``items``), which group each item belongs to (an LFW image is its own group, a YTF video
groups its frames, a template of a template-based protocol groups its images) and the pairs as group
indices. Images go through the same MTCNN crop as training images; the prepared crops are cached and
reused between runs.

A protocol is a subclass registered by name (:func:`register_protocol`): it knows how to read its file
(:meth:`~VerificationSet.read_pairs`), which items a group needs (:meth:`~VerificationSet.members`),
which groups an embeddings row counts for (:meth:`~VerificationSet.embedding_groups`) and what a group
is called. ``VerificationSet(protocol=NAME, ...)`` builds the registered class, so a config names a
protocol without naming its class. LFW pairs live here; YouTube Faces splits in
:mod:`stn_face.data.ytf_sets`, insightface ``.bin`` files in :mod:`stn_face.data.bin_sets`. A new
format is one module (a registered subclass) plus one ``conf/eval`` file; nothing else names it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from stn_face.data.protocols import (
    Pair,
    check_images_exist,
    filter_available,
    read_lfw_pairs,
    unique_images,
)
from stn_face.errors import InputError, MissingInputError

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S", bound="VerificationSet")


class IdentityOverlapError(InputError):
    """An evaluation set shares people with the model's training set (see ``check_training_identities``)."""


class MissingEmbeddingsError(InputError):
    """Images named by the pair file have no embedding in the given file."""


# ------------------------------------------------------------------------------------------ registry
_PROTOCOLS: dict[str, type[VerificationSet]] = {}
#: the modules of the protocols that ship with the package, imported on first use of their name
_BUILT_IN = {"ytf": "stn_face.data.ytf_sets", "bin": "stn_face.data.bin_sets", "ijb": "stn_face.data.ijb_sets"}


def register_protocol(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator: make a :class:`VerificationSet` subclass the protocol ``name``
    (``eval.protocol=name``)."""

    def register(cls: type[S]) -> type[S]:
        if not (isinstance(cls, type) and issubclass(cls, VerificationSet)):
            raise TypeError(f"protocol {name!r} must be a VerificationSet subclass, got {cls!r}")
        cls.protocol_name = name
        _PROTOCOLS[name] = cls
        return cls

    return register


def protocol_class(name: str) -> type[VerificationSet]:
    """The class registered as protocol ``name``; a :class:`ValueError` naming the known ones otherwise."""
    if name not in _PROTOCOLS and name in _BUILT_IN:
        importlib.import_module(_BUILT_IN[name])
    if name not in _PROTOCOLS:
        known = ", ".join(sorted(set(_PROTOCOLS) | set(_BUILT_IN)))
        raise ValueError(f"unknown verification protocol {name!r}; the registered ones are: {known}")
    return _PROTOCOLS[name]


def missing_file_hint(options: dict[str, Any]) -> str:
    """What to say when the protocol file of the eval options ``options`` does not exist."""
    try:
        cls = protocol_class(str(options.get("protocol")))
    except ValueError:
        cls = VerificationSet
    return cls.missing_file_hint(options)


def expand_eval_configs(configs: Sequence[Any]) -> list[Any]:
    """Eval configs as the sets they name: each protocol may turn one config into several
    (:meth:`VerificationSet.expand_config`: ``eval.bin_dir`` gives one set per ``.bin``); checks that no two
    sets share a name (their logged ``val/<name>_*`` metrics would collide)."""
    expanded = []
    for cfg in configs:
        protocol = cfg.get("protocol") if hasattr(cfg, "get") else None
        try:
            cls = protocol_class(str(protocol))
        except ValueError:  # instantiating it says what is wrong
            expanded.append(cfg)
            continue
        expanded += cls.expand_config(cfg)
    names = [_set_name(cfg) for cfg in expanded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"two evaluation sets are both named {repeated[0]!r}, so their val/{repeated[0]}_* metrics "
                         "would collide; give one another name (eval.name=... or extra_eval.<key>.name=...)")
    return expanded


def _set_name(cfg: Any) -> str | None:
    name = cfg.get("name") if hasattr(cfg, "get") else None
    path = cfg.get("path") if hasattr(cfg, "get") else None
    return name or (Path(str(path)).stem if path else None)


def registered_protocols() -> list[str]:
    """The names of every protocol known now (the built-in ones included)."""
    return sorted(set(_PROTOCOLS) | set(_BUILT_IN))


@dataclass
class VerificationSet:
    """One evaluation protocol (``protocol``: a registered name, :func:`registered_protocols`) over
    images under ``image_root``; ``VerificationSet(protocol=...)`` builds the protocol's class.

    ``prepared_root`` receives the face crops; ``max_pairs`` keeps the first pairs of every fold
    (quick checks); ``max_frames`` evenly subsamples each YTF video; ``allow_missing`` scores only
    pairs whose images exist instead of failing.

    A model must not be scored on the people it was trained on without saying so
    (:meth:`check_training_identities`): a pair whose person (the first path component, ``Name/...``)
    is a training identity stops the evaluation with an :class:`IdentityOverlapError`, unless
    ``exclude_training_identities`` (score only the disjoint pairs) or ``allow_identity_overlap``
    (score all, marked as such in the results). Identities are matched by name; a training set with
    other names (CASIA-WebFace's numeric ids) excludes LFW's people at preparation instead
    (``CASIA_LFW_OVERLAP``).
    """

    name: str
    protocol: str
    pairs_file: str
    image_root: str
    prepared_root: str
    max_pairs_per_fold: int | None = None
    max_frames: int | None = None
    allow_missing: bool = False
    exclude_training_identities: bool = False
    allow_identity_overlap: bool = False
    pairs: list[Pair] = field(default_factory=list, init=False)
    #: pairs with a training identity (None: not checked, e.g. embeddings of an unknown model)
    pairs_with_training_identities: int | None = field(default=None, init=False)
    excluded_pairs: int = field(default=0, init=False)
    skipped_pairs: int = field(default=0, init=False)
    sources: list[str] = field(default_factory=list, init=False)
    groups: list[str] = field(default_factory=list, init=False)
    item_group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False)
    items: list[Path] = field(default_factory=list, init=False)

    #: the registered name (set by :func:`register_protocol`)
    protocol_name: ClassVar[str] = ""
    #: what a group is, in messages ("images", "videos", "templates")
    group_noun: ClassVar[str] = "images"
    #: what a path of a pair names under the image root: an image ``file`` or a ``folder`` of frames
    group_path: ClassVar[str] = "image"

    def __new__(cls, *args: Any, **kwargs: Any) -> VerificationSet:
        if cls is VerificationSet:  # the protocol chooses the class
            cls = protocol_class(kwargs["protocol"] if "protocol" in kwargs else args[1])
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if protocol_class(self.protocol) is not type(self):
            raise ValueError(f"eval set {self.name!r}: protocol {self.protocol!r} is not {type(self).__name__}'s "
                             f"({self.protocol_name!r})")

    # ------------------------------------------------------------------- what a protocol defines
    def read_pairs(self) -> list[Pair]:
        """Every pair of the protocol file, in file order (paths relative to ``image_root``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read {self.pairs_file}")

    def members(self, group: str) -> list[str]:
        """The items (paths under ``image_root``) of one group: an image is its own only item."""
        return [group]

    def embedding_groups(self, name: str) -> list[str]:
        """The groups a row of an embeddings file named ``name`` counts for (an image: itself)."""
        return [name]

    #: the FARs whose TAR is reported (None: the verification default, 1e-2 and 1e-3)
    fars: ClassVar[tuple[float, ...] | None] = None

    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The eval options with the protocol's own defaults filled in (e.g. file paths from a release
        folder), before the pair file is looked for; unchanged by default."""
        return options

    def item_weights(self) -> np.ndarray | None:
        """Each item's weight in its group's feature sum (``(N,)``), or None for a plain mean."""
        return None

    @classmethod
    def expand_config(cls, cfg: Any) -> list[Any]:
        """The eval configs one config stands for (a folder of files: one each); itself by default."""
        return [cfg]

    @classmethod
    def missing_file_hint(cls, options: dict[str, Any]) -> str:
        """What to say when the protocol file ``options["pairs_file"]`` does not exist."""
        path = Path(str(options.get("pairs_file") or "")).expanduser()
        return f"pair file not found: {path}; pass eval.pairs=PATH (an LFW pairs.txt or a YTF splits.txt)"

    # ------------------------------------------------------------------------------ the steps
    def protocol_pairs(self) -> list[Pair]:
        """:meth:`read_pairs`, limited to the first ``max_pairs_per_fold`` same and different pairs of a fold."""
        pairs = self.read_pairs()
        if self.max_pairs_per_fold is not None:
            pairs = first_per_fold(pairs, self.max_pairs_per_fold)
        return pairs

    def load(self) -> VerificationSet:
        """Read the pairs, check what exists, and list the source images needed (no image is opened)."""
        pairs = self.protocol_pairs()
        if self.allow_missing:
            kept = filter_available(pairs, self.image_root, self.group_path)
            self.skipped_pairs = len(pairs) - len(kept)
            if self.skipped_pairs:
                log.warning("%s: %d of %d pairs skipped because their %s are missing under %s",
                            self.name, self.skipped_pairs, len(pairs), self.group_noun, self.image_root)
            pairs = kept
        else:
            check_images_exist(pairs, self.image_root, self.group_path)
        if not pairs:
            raise ValueError(f"{self.name}: no pair of {self.pairs_file} can be scored under {self.image_root}")
        self.sources = self.set_pairs(pairs, self.members)
        return self

    def use_embeddings(self, names: Sequence[str], source: str) -> list[int]:
        """Use the rows of an embeddings file instead of crops: returns, item after item, the row of each.

        A group takes every row whose name is one of its :meth:`embedding_groups`. Pairs with a group
        that has no row are an error naming how many and the first few, or skipped (``skipped_pairs``)
        with ``allow_missing``.
        """
        pairs = self.protocol_pairs()
        rows: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            for group in self.embedding_groups(clean_name(name)):
                rows.setdefault(group, []).append(index)
        wanted = unique_images(pairs)
        missing = [group for group in wanted if group not in rows]
        if missing and not self.allow_missing:
            raise MissingEmbeddingsError(
                f"{len(missing)} of {len(wanted)} {self.group_noun} named by {self.pairs_file} have no embedding in "
                f"{source} (first: {', '.join(missing[:3])}); names must be paths relative to the image root, like "
                f"{wanted[0]}; or pass eval.allow_missing=true to score only the pairs present")
        if missing:
            absent = set(missing)
            kept = [p for p in pairs if p.left not in absent and p.right not in absent]
            self.skipped_pairs = len(pairs) - len(kept)
            log.warning("%s: %d of %d pairs skipped because %d %s have no embedding", self.name,
                        self.skipped_pairs, len(pairs), len(missing), self.group_noun)
            pairs = kept
        if not pairs:
            raise MissingEmbeddingsError(f"no pair of {self.pairs_file} can be scored from {source}")
        return self.set_pairs(pairs, rows.__getitem__)

    def set_pairs(self, pairs: list[Pair], members: Callable[[str], list[T]]) -> list[T]:
        """Use ``pairs``: set ``groups`` (their images/videos, first-seen order) and ``item_group``.

        ``members(group)`` lists a group's items (an LFW image: itself; a YTF video: its frames, or
        the rows of an embeddings file). Returns all items, group after group; ``item_group[i]`` is
        the group index of item ``i``.
        """
        self.pairs = pairs
        self.groups = unique_images(pairs)
        items: list[T] = []
        item_group: list[int] = []
        for index, group in enumerate(self.groups):
            group_items = members(group)
            items += group_items
            item_group += [index] * len(group_items)
        self.item_group = np.asarray(item_group, dtype=np.int64)
        return items

    def check_training_identities(self, training_names: Iterable[str]) -> VerificationSet:
        """Count the loaded pairs that involve a training identity; stop, exclude them or record them.

        Call after :meth:`load` and before :meth:`prepare`/:meth:`resolve`.
        """
        trained = set(training_names)
        overlapping = [p for p in self.pairs if _person(p.left) in trained or _person(p.right) in trained]
        self.pairs_with_training_identities = len(overlapping)
        if not overlapping:
            return self
        same = sum(p.same for p in overlapping)
        if self.exclude_training_identities:
            dropped = {id(p) for p in overlapping}
            kept = [p for p in self.pairs if id(p) not in dropped]
            if not kept:
                raise IdentityOverlapError(f"{self.name}: every pair involves a training identity; nothing is left "
                                           "to score with eval.exclude_training_identities=true")
            self.excluded_pairs = len(self.pairs) - len(kept)
            log.warning("%s: %d of %d pairs (%d same-person) involve training identities and are excluded",
                        self.name, self.excluded_pairs, len(self.pairs), same)
            self.sources = self.set_pairs(kept, self.members)
            return self
        if self.allow_identity_overlap:
            log.warning("%s: %d of %d pairs involve training identities (allowed: the result is marked)",
                        self.name, len(overlapping), len(self.pairs))
            return self
        raise IdentityOverlapError(
            f"{self.name}: {len(overlapping)} of {len(self.pairs)} pairs ({same} same-person) involve people the "
            f"model was trained on ({self.pairs_file}); accuracy on them is not a verification result. Use a "
            "disjoint set (e.g. eval=lfw_view1, the DevTest pairs, for a model trained on LFW View 1), or "
            "eval.exclude_training_identities=true to score only the disjoint pairs, or "
            "eval.allow_identity_overlap=true to score all of them knowingly (marked in the results)")

    def prepare(self, crop: dict[str, Any], workers: int = 2, progress: bool = True) -> None:
        """Detect and crop every needed image into ``prepared_root`` (cached: done files are skipped)."""
        from stn_face.data.prepare import CropSettings, prepare_collection

        settings, options = CropSettings.split(crop)
        prepare_collection(self.image_root, self.prepared_root, settings, files=self.sources, workers=workers,
                           progress=progress, replace_stale=True, **options)

    def resolve(self) -> VerificationSet:
        """Map every source image to its prepared crop; failed images are an error naming them."""
        from stn_face.data.prepare import crop_path_map

        crops = crop_path_map(self.prepared_root)
        missing = [s for s in self.sources if s not in crops]
        if missing:
            raise MissingInputError(
                f"{self.name}: {len(missing)} of {len(self.sources)} images have no prepared crop in "
                f"{self.prepared_root} (first: {missing[:3]}); see its manifest.csv for the reasons, "
                "or delete the folder to prepare it again"
            )
        self.items = [crops[s] for s in self.sources]
        return self

    def pair_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs as ``(left, right)`` group indices, labels (bool) and folds: each ``(n_pairs,)``."""
        index = {g: i for i, g in enumerate(self.groups)}
        left = np.array([index[p.left] for p in self.pairs], dtype=np.int64)
        right = np.array([index[p.right] for p in self.pairs], dtype=np.int64)
        labels = np.array([p.same for p in self.pairs], dtype=bool)
        folds = np.array([p.fold for p in self.pairs], dtype=np.int64)
        return np.stack([left, right], axis=1), labels, folds


def _person(item: str) -> str:
    """The identity of a pair item: its first path component (``Name/Name_0001.jpg``, ``Name/1``)."""
    return str(item).replace("\\", "/").split("/", 1)[0]


def clean_name(name: str) -> str:
    """A name from an embeddings file as a path relative to the image root: forward slashes, no leading ``./``
    or ``/``, no trailing ``/``."""
    name = str(name).replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def first_per_fold(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first ``limit`` same and ``limit`` different pairs of every fold, file order kept."""
    counts: dict[tuple[int, bool], int] = {}
    kept = []
    for pair in pairs:
        key = (pair.fold, pair.same)
        if counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            kept.append(pair)
    return kept


@register_protocol("lfw")
@dataclass
class LFWPairsSet(VerificationSet):
    """LFW ``pairs.txt`` (View 2, 10 folds) or ``pairsDev*.txt`` (View 1, one fold): one image per group."""

    def read_pairs(self) -> list[Pair]:
        return read_lfw_pairs(self.pairs_file)
