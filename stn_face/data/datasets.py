"""Datasets over prepared face crops: identity folders for training, image lists for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stn_face.data.images import ImageReadError, decode_rgb, read_rgb
from stn_face.data.recordio import RecordIOError, open_packed
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
        raise EmptyDatasetError(f"training folder {root} does not exist; pass data.root=DIR, a folder of "
                                "<identity>/<image> face crops (make one from raw photos with `stn-face-prepare "
                                "input=RAW output=DIR`), or choose data=celeba_subset / data=lfw_view1")
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


class LabelledImages(Dataset):
    """What the training and evaluation datasets share: ``(image tensor (3, S, S), label)`` items.

    An item may be asked for as ``(index, seed)`` (see :class:`ResumableShuffleSampler`): the random
    augmentation is then seeded by ``seed``, so it repeats exactly on a resumed run. An image that
    cannot be read (corrupt, truncated, not an image) is replaced by the next readable one with a
    warning, so one broken file never ends a long run. Subclasses say how to read item ``index``.
    """

    def __init__(self, transform: Callable[..., dict]) -> None:
        self.transform = transform
        self._warned: set[int] = set()

    def read(self, index: int) -> tuple[np.ndarray, int]:
        """The RGB image ``(H, W, 3)`` uint8 and label of item ``index``; ImageReadError if it does not decode."""
        raise NotImplementedError

    def source(self, index: int) -> str:
        """Where item ``index`` comes from, for messages."""
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                image, label = self.read(current)
            except ImageReadError as error:
                if current not in self._warned:
                    self._warned.add(current)
                    log.warning("skipping unreadable image %s: %s", self.source(current), error)
                continue
            if seed is not None and hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(seed)
            return self.transform(image=np.ascontiguousarray(image))["image"], label
        raise ImageReadError(f"none of the {len(self)} images can be read", self.source(index))


class FaceImageDataset(LabelledImages):
    """Image files with labels; evaluation sets use the position as label (see :class:`LabelledImages`)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None,
                 transform: Callable[..., dict]) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else list(range(len(self.paths)))
        if len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        super().__init__(transform)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> tuple[np.ndarray, int]:
        return read_rgb(self.paths[index]), self.labels[index]

    def source(self, index: int) -> str:
        return str(self.paths[index])


#: FaceDataModule options that choose images from identity folders; a packed set is used whole.
FOLDER_ONLY_OPTIONS = ("raw_root", "people_file", "identities", "max_identities", "max_images_per_identity")


class RecordImageDataset(LabelledImages):
    """The image records of an insightface training folder (:func:`~stn_face.data.recordio.open_packed`), read
    through ``train.idx`` with one file handle per DataLoader worker; labels come from the record headers.

    Item ``i`` is the ``i``-th image record, so a set packed from a folder by ``stn-face-pack rec`` yields
    the very items (pixels and labels, decoded like :func:`read_rgb`) that ``data=folder`` yields for it.
    """

    def __init__(self, path: str | Path, transform: Callable[..., dict], check_records: int = 1000) -> None:
        self.packed = open_packed(path, check_records)
        super().__init__(transform)

    @property
    def class_names(self) -> list[str]:
        return self.packed.class_names

    def __len__(self) -> int:
        return len(self.packed.keys)

    def source(self, index: int) -> str:
        return f"{self.packed.records.rec_path} record {int(self.packed.keys[index])}"

    def read(self, index: int) -> tuple[np.ndarray, int]:
        record = self.packed.records.read(int(self.packed.keys[index]))
        label = record.identity
        if not (0 <= label < self.packed.num_classes and label == int(label)):
            raise RecordIOError(f"{self.source(index)} has label {label:g}, outside the {self.packed.num_classes} "
                                f"identities of {self.packed.directory / 'property'}: the property file belongs to "
                                "another set; use the one shipped with this train.rec")
        return decode_rgb(record.payload, self.source(index)), int(label)


def check_packed_options(path: str | None, options: dict) -> None:
    """A packed set is trained on whole: the folder selection options are an error (say what to do)."""
    if not path:
        raise InputError("data=rec needs data.path=DIR, a folder holding train.rec, train.idx and property")
    given = [k for k in FOLDER_ONLY_OPTIONS if options.get(k)]
    if options.get("min_images_per_identity", 1) > 1:
        given.append("min_images_per_identity")
    if given:
        raise InputError(f"data.{given[0]} selects images of identity folders; a packed .rec is trained on whole. "
                         "Pack the subset you want (`stn-face-pack rec CROPS DIR --max-identities N ...`)")
