"""The packer: a prepared ``<identity>/<image>`` folder into insightface's training layout (``train.rec`` +
``train.idx`` + ``property`` + ``identities.txt``; the format is :mod:`stn_face.data.recordio`'s, which reads it).
Kept apart from the reader because it scans folders (:mod:`stn_face.data.datasets`), which reads packs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stn_face.data.datasets import scan_identity_folders
from stn_face.data.images import ImageReadError, decode_rgb
from stn_face.data.recordio import NAMES_FILE, PROPERTY_FILE, REC_FILE, RecordWriter, pack
from stn_face.errors import InputError, MissingInputError


@dataclass
class PackSummary:
    images: int
    identities: int
    skipped: dict[str, str]
    bytes: int

    def format(self) -> str:
        skipped = f", {len(self.skipped)} unreadable file(s) left out" if self.skipped else ""
        return f"{self.images} images of {self.identities} identities, {self.bytes / 2**20:.1f} MiB{skipped}"


def pack_folders(root: str | Path, output: str | Path, min_images_per_identity: int = 1,
                 max_identities: int | None = None, max_images_per_identity: int | None = None) -> PackSummary:
    """Pack a prepared ``<root>/<identity>/<image>`` folder into ``output/train.rec`` + ``train.idx`` +
    ``property`` + ``identities.txt``, insightface's layout: header record, image records ``1..n`` (the
    files' own bytes, labels = indices into the sorted identity names, as ``data=folder`` numbers them),
    then one identity record per identity. The selection options are :func:`scan_identity_folders`'s;
    files that do not decode are left out (listed in the summary)."""
    root, output = Path(root).expanduser(), Path(output).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"{root} is not a folder; pass prepared crops laid out as <identity>/<image> (make "
                                "them from raw photos with `stn-face-prepare input=RAW output=DIR`)")
    if output.resolve() == root.resolve() or root.resolve() in output.resolve().parents:
        raise InputError(f"output {output} is inside the input {root}; write the pack somewhere else")
    samples, names = scan_identity_folders(root, min_images_per_identity, max_identities=max_identities,
                                           max_images_per_identity=max_images_per_identity)
    kept, skipped, shape = [], {}, None
    for sample in samples:
        data = sample.path.read_bytes()
        try:
            image = decode_rgb(data, str(sample.path))
        except ImageReadError as error:
            skipped[str(sample.path)] = error.reason
            continue
        shape = shape or image.shape[:2]
        kept.append((sample.label, data))
    if not kept:
        raise InputError(f"none of the {len(samples)} images under {root} can be read")
    output.mkdir(parents=True, exist_ok=True)
    n = len(kept)
    ranges = {}
    for key, (label, _) in enumerate(kept, 1):
        start, _ = ranges.get(label, (key, key))
        ranges[label] = (start, key + 1)
    with RecordWriter(output / REC_FILE) as writer:
        writer.write(pack(0, b"", labels=np.array([n + 1, n + 1 + len(names)])))
        for key, (label, data) in enumerate(kept, 1):
            writer.write(pack(float(label), data, id1=key))
        for label in range(len(names)):  # an identity every image of which failed keeps an empty range
            start, end = ranges.get(label, (0, 0))
            writer.write(pack(0, b"", id1=n + 1 + label, labels=np.array([start, end])))
    (output / PROPERTY_FILE).write_text(f"{len(names)},{shape[0]},{shape[1]}\n")
    (output / NAMES_FILE).write_text("".join(f"{name}\n" for name in names))
    return PackSummary(n, len(names), skipped, (output / REC_FILE).stat().st_size)
