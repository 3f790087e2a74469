"""Read insightface's packed datasets without mxnet: ``train.rec``/``train.idx`` and ``lfw.bin``.

Many users hold CASIA-WebFace (``faces_webface_112x112``) in this form. RecordIO layout (MXNet's
``recordio``): each record is ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (upper 3 bits: a
continuation flag, lower 29: the length), the payload, then zero padding to 4 bytes. A payload of
an image record starts with the ``IRHeader`` struct ``<IfQQ`` (flag, label, id, id2); when ``flag > 0``
``flag`` float32 labels follow; the rest is the encoded image. Record 0 of an insightface ``.rec``
is a header whose labels give the range of image records ``[1, label[0])``. The ``.idx`` file holds
``key<TAB>byte offset`` lines. ``lfw.bin`` is a pickle of ``(list of encoded images, list of bool)``
with the two images of pair ``i`` at ``2 i`` and ``2 i + 1``.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stn_face.errors import InputError, MissingInputError

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")


class RecordIOError(InputError, ValueError):
    """A ``.rec``/``.idx``/``.bin`` file is not in the expected format."""


@dataclass(frozen=True)
class Record:
    flag: int
    label: float | np.ndarray
    id: int
    id2: int
    payload: bytes


def read_index(path: str | Path) -> dict[int, int]:
    """``key -> byte offset`` from an ``.idx`` file."""
    index = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, offset = line.split("\t")
            index[int(key)] = int(offset)
        except ValueError:
            raise RecordIOError(f"{path}:{number}: expected 'key<TAB>offset', got {line!r}") from None
    return index


def unpack(raw: bytes) -> Record:
    """Split a record payload into its ``IRHeader`` fields, labels and encoded image bytes."""
    if len(raw) < _HEADER.size:
        raise RecordIOError(f"record of {len(raw)} bytes is shorter than its {_HEADER.size}-byte header")
    flag, label, id1, id2 = _HEADER.unpack_from(raw)
    rest = raw[_HEADER.size:]
    if flag > 0:
        labels = np.frombuffer(rest[: 4 * flag], dtype=np.float32).copy()
        return Record(flag, labels, id1, id2, rest[4 * flag:])
    return Record(flag, label, id1, id2, rest)


def pack(label: float, payload: bytes, id1: int = 0, labels: np.ndarray | None = None) -> bytes:
    """The payload of one record (the inverse of :func:`unpack`)."""
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        return _HEADER.pack(len(labels), 0.0, id1, 0) + labels.tobytes() + payload
    return _HEADER.pack(0, float(label), id1, 0) + payload


class RecordReader:
    """Random access to a ``.rec`` file through its ``.idx``."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file() or not idx_path.is_file():
            raise MissingInputError(f"RecordIO needs both {self.rec_path} and {idx_path}")
        self.index = read_index(idx_path)
        self._file = open(self.rec_path, "rb")

    def read(self, key: int) -> bytes:
        self._file.seek(self.index[key])
        chunks = []
        while True:
            head = self._file.read(8)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: truncated record {key}")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.rec_path}: bad magic {magic:#x} at record {key}")
            cflag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
            chunks.append(self._file.read(length))
            self._file.read((4 - length % 4) % 4)
            if cflag in (0, 3):  # whole record, or the last part of a split one
                return b"".join(chunks)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records(rec_path: str | Path, payloads: list[bytes]) -> None:
    """Write payloads as records ``0..n-1`` with their ``.idx`` (for building packed sets and tests)."""
    rec_path = Path(rec_path)
    lines = []
    with open(rec_path, "wb") as out:
        for key, payload in enumerate(payloads):
            lines.append(f"{key}\t{out.tell()}")
            out.write(struct.pack("<II", MAGIC, len(payload)))
            out.write(payload + b"\0" * ((4 - len(payload) % 4) % 4))
    rec_path.with_suffix(".idx").write_text("\n".join(lines) + "\n")


def iter_insightface_rec(rec_path: str | Path) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(key, identity label, RGB image)`` for every image record of an insightface ``.rec``."""
    with RecordReader(rec_path) as reader:
        first = unpack(reader.read(0))
        keys = range(1, int(first.label[0])) if first.flag > 0 else sorted(reader.index)
        for key in keys:
            record = unpack(reader.read(key))
            label = record.label[0] if isinstance(record.label, np.ndarray) else record.label
            yield key, int(label), decode(record.payload)


def decode(payload: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RecordIOError("record payload is not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def export_to_folders(rec_path: str | Path, output: str | Path) -> int:
    """Unpack an insightface ``.rec`` into ``output/<label>/<key>.jpg`` (a ``data=folder`` root of
    already aligned 112x112 faces). Returns the number of images written."""
    output = Path(output)
    count = 0
    for key, label, image in iter_insightface_rec(rec_path):
        folder = output / f"{label:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{key:08d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        count += 1
    return count


def read_bin_pairs(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (RGB arrays) and same-person labels of an insightface ``lfw.bin``-style pair file."""
    with open(path, "rb") as handle:
        try:
            bins, issame = pickle.load(handle, encoding="bytes")
        except Exception as error:
            raise RecordIOError(f"{path} is not an insightface pair file ({error})") from None
    if len(bins) != 2 * len(issame):
        raise RecordIOError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected twice as many)")
    return [decode(bytes(b)) for b in bins], np.asarray(issame, dtype=bool)
