"""Datasets over prepared face crops: identity folders for training, image lists for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stn_face.data.images import ImageReadError, read_rgb
from stn_face.errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class EmptyDatasetError(InputError, ValueError):
    """A dataset folder holds no usable images."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def scan_identity_folders(
    root: Path,
    min_images_per_identity: int = 1,
    identities: Iterable[str] | None = None,
    max_identities: int | None = None,
    max_images_per_identity: int | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> tuple[list[Sample], list[str]]:
    """Samples of ``<root>/<identity>/<image>`` and the sorted class names (index = label).

    Identities with fewer than ``min_images_per_identity`` images, or not in ``identities`` when
    given, are left out; then the first ``max_identities`` (by name) are kept, each with its first
    ``max_images_per_identity`` images (by file name). Raises :class:`EmptyDatasetError` naming the folder when nothing is left.
    """
    root = Path(root)
    if not root.is_dir():
        raise EmptyDatasetError(f"training folder {root} does not exist")
    wanted = set(identities) if identities is not None else None
    per_identity: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if wanted is not None and folder.name not in wanted:
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in extensions and f.is_file())
        if len(files) >= min_images_per_identity:
            per_identity[folder.name] = files[:max_images_per_identity] if max_images_per_identity else files
        if max_identities and len(per_identity) >= max_identities:
            break
    if len(per_identity) < 2:
        raise EmptyDatasetError(
            f"{root} holds {len(per_identity)} identity folder(s) with at least {min_images_per_identity} "
            "images; training needs at least 2 identities laid out as <root>/<identity>/<image>.jpg "
            "(prepare raw photos with `stn-face-prepare input=RAW output=DIR`)"
        )
    names = sorted(per_identity)
    samples = [Sample(path, label) for label, name in enumerate(names) for path in per_identity[name]]
    return samples, names


class FaceImageDataset(Dataset):
    """Images with labels: ``(image tensor (3, S, S), label)``; evaluation sets use the position as label.

    An item may be asked for as ``(index, seed)`` (see :class:`ResumableShuffleSampler`): the random
    augmentation is then seeded by ``seed``, so it repeats exactly on a resumed run. An image that
    cannot be read (corrupt, truncated, not an image) is replaced by the next readable one with a
    warning, so one broken file never ends a long run.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None,
                 transform: Callable[..., dict]) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else list(range(len(self.paths)))
        if len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        self.transform = transform
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                image = read_rgb(self.paths[current])
            except ImageReadError as error:
                if current not in self._warned:
                    self._warned.add(current)
                    log.warning("skipping unreadable image %s: %s", self.paths[current], error)
                continue
            if seed is not None and hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(seed)
            return self.transform(image=np.ascontiguousarray(image))["image"], self.labels[current]
        raise ImageReadError(f"none of the {len(self.paths)} images can be read", self.paths[index])
