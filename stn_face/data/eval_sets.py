"""Verification sets: a protocol file, the images it names, and their prepared crops.

A :class:`VerificationSet` turns a pair file into what an embedder needs: a flat list of crop
paths (``items``), which group each item belongs to (an LFW image is its own group, a YTF video
groups its frames) and the pairs as group indices. Images go through the same MTCNN crop as
training images; the prepared crops are cached and reused between runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from stn_face.data.protocols import (
    Pair,
    check_images_exist,
    filter_available,
    read_lfw_pairs,
    read_ytf_splits,
    unique_images,
)
from stn_face.errors import InputError, MissingInputError

log = logging.getLogger(__name__)
T = TypeVar("T")


class IdentityOverlapError(InputError):
    """An evaluation set shares people with the model's training set (see ``check_training_identities``)."""


FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass
class VerificationSet:
    """One evaluation protocol (``protocol`` is ``lfw`` or ``ytf``) over images under ``image_root``.

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

    def __post_init__(self) -> None:
        if self.protocol not in ("lfw", "ytf"):
            raise ValueError(f"unknown protocol {self.protocol!r} for eval set {self.name!r}; use lfw or ytf")

    @property
    def kind(self) -> str:
        return "video" if self.protocol == "ytf" else "lfw"

    def load(self) -> VerificationSet:
        """Read the pairs, check what exists, and list the source images needed (no image is opened)."""
        pairs = read_ytf_splits(self.pairs_file) if self.protocol == "ytf" else read_lfw_pairs(self.pairs_file)
        if self.max_pairs_per_fold is not None:
            pairs = _first_per_fold(pairs, self.max_pairs_per_fold)
        if self.allow_missing:
            kept = filter_available(pairs, self.image_root, self.kind)
            self.skipped_pairs = len(pairs) - len(kept)
            if self.skipped_pairs:
                log.warning("%s: %d of %d pairs skipped because their images/videos are missing under %s",
                            self.name, self.skipped_pairs, len(pairs), self.image_root)
            pairs = kept
        else:
            check_images_exist(pairs, self.image_root, self.kind)
        if not pairs:
            raise ValueError(f"{self.name}: no pair of {self.pairs_file} can be scored under {self.image_root}")
        self.sources = self.set_pairs(pairs, self._frames if self.protocol == "ytf" else lambda group: [group])
        return self

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
            members = self._frames if self.protocol == "ytf" else (lambda group: [group])
            self.sources = self.set_pairs(kept, members)
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

    def _frames(self, video: str) -> list[str]:
        folder = Path(self.image_root) / video
        frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS),
                        key=lambda p: _frame_number(p.name))
        if not frames:
            raise MissingInputError(f"YTF video folder {folder} holds no frames")
        if self.max_frames is not None and len(frames) > self.max_frames:
            picks = np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)
            frames = [frames[i] for i in picks]
        return [f"{video}/{p.name}" for p in frames]

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


def _first_per_fold(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first ``limit`` same and ``limit`` different pairs of every fold, file order kept."""
    counts: dict[tuple[int, bool], int] = {}
    kept = []
    for pair in pairs:
        key = (pair.fold, pair.same)
        if counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            kept.append(pair)
    return kept


def _frame_number(name: str) -> tuple[int, str]:
    parts = name.split(".")
    try:
        return int(parts[1]), name
    except (IndexError, ValueError):
        return 0, name
