"""insightface's packed training sets without mxnet: ``train.rec`` + ``train.idx`` + ``property``.

RecordIO (dmlc-core's ``recordio``, what ``mx.recordio`` writes): each record is ``uint32 magic
0xced7230a``, ``uint32 lrecord`` (upper 3 bits: a continuation flag, lower 29: the length), the
payload, then zero padding to 4 bytes. dmlc's writer cuts a payload wherever the magic word appears at
a 4-byte-aligned position (flags 1 = first, 2 = middle, 3 = last part; 0 = whole) and drops that word;
the reader puts it back between the parts. The ``.idx`` file holds ``key<TAB>byte offset`` lines.

An image record's payload starts with the ``IRHeader`` struct ``<IfQQ`` (flag, label, id, id2); when
``flag > 0``, ``flag`` float32 labels follow (the identity is the first); the rest is the encoded image.
insightface's sets begin with a header record 0 whose labels ``(a, b)`` say that records ``1 .. a-1``
are images and ``a .. b-1`` identity records (one per identity, labels: its range of image records).
``property`` is one line ``<identities>,<height>,<width>``. :func:`stn_face.data.pack.pack_folders` writes all
of this, plus ``identities.txt`` (one identity name per label), which insightface's readers ignore.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stn_face.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_HEADER = struct.Struct("<IfQQ")
_LENGTH_BITS = 29
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3

MAX_IMAGE_SIDE = 65_536  # a property file's height and width; larger is not an image size but damage
REC_FILE, IDX_FILE, PROPERTY_FILE, NAMES_FILE = "train.rec", "train.idx", "property", "identities.txt"
REBUILD_HINT = ("rebuild the index with `stn-face-pack index {rec}`; if that stops at a bad record too, the .rec "
                "is damaged: copy or download it again")


class RecordIOError(InputError, ValueError):
    """A ``.rec``/``.idx``/``property`` file is not what it should be; the message names the file, the record
    and what to do."""


@dataclass(frozen=True)
class Record:
    flag: int
    label: float | np.ndarray
    id: int
    id2: int
    payload: bytes

    @property
    def identity(self) -> float:
        """The identity label: ``label``, or the first of the ``flag`` labels."""
        return float(self.label[0]) if isinstance(self.label, np.ndarray) else float(self.label)


def unpack(raw: bytes, where: str = "record") -> Record:
    """Split a record payload into its ``IRHeader`` fields, labels and encoded image bytes."""
    if len(raw) < _HEADER.size:
        raise RecordIOError(f"{where}: {len(raw)} bytes, shorter than the {_HEADER.size}-byte IRHeader")
    flag, label, id1, id2 = _HEADER.unpack_from(raw)
    rest = raw[_HEADER.size:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"{where}: the IRHeader announces {flag} labels but the record ends first")
        labels = np.frombuffer(rest[: 4 * flag], dtype=np.float32).copy()
        return Record(flag, labels, id1, id2, rest[4 * flag:])
    return Record(flag, label, id1, id2, rest)


def pack(label: float, payload: bytes, id1: int = 0, labels: np.ndarray | None = None) -> bytes:
    """The payload of one record (the inverse of :func:`unpack`)."""
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        return _HEADER.pack(len(labels), 0.0, id1, 0) + labels.tobytes() + payload
    return _HEADER.pack(0, float(label), id1, 0) + payload


# ------------------------------------------------------------------------------------------- framing
def frame(payload: bytes) -> bytes:
    """The bytes dmlc's ``RecordIOWriter`` writes for ``payload``: split at aligned magic words, padded."""
    parts, start = [], 0
    for position in range(0, len(payload) - len(payload) % 4, 4):
        if payload[position:position + 4] == _MAGIC_BYTES:
            parts.append(payload[start:position])
            start = position + 4
    parts.append(payload[start:])
    out = []
    for number, part in enumerate(parts):
        if len(parts) == 1:
            flag = _WHOLE
        else:
            flag = _FIRST if number == 0 else _LAST if number == len(parts) - 1 else _MIDDLE
        out.append(_FRAME.pack(MAGIC, (flag << _LENGTH_BITS) | len(part)) + part)
    out.append(b"\0" * (-len(payload) % 4))
    return b"".join(out)


class _FrameError(Exception):
    """A record frame that cannot be read; ``truncated``: the data ends inside it (else a wrong magic)."""

    def __init__(self, message: str, truncated: bool) -> None:
        super().__init__(message)
        self.truncated = truncated


def unframe(data: bytes | memoryview) -> tuple[bytes, int]:
    """The payload of the record at the start of ``data`` and the number of bytes it took."""
    parts, position = [], 0
    while True:
        if len(data) - position < _FRAME.size:
            raise _FrameError("the file ends inside the record", truncated=True)
        magic, lrecord = _FRAME.unpack_from(data, position)
        if magic != MAGIC:
            raise _FrameError(f"found {magic:#010x} where the RecordIO magic {MAGIC:#010x} belongs", truncated=False)
        flag, length = lrecord >> _LENGTH_BITS, lrecord & ((1 << _LENGTH_BITS) - 1)
        start = position + _FRAME.size
        if len(data) - start < length:
            raise _FrameError(f"it declares {length} bytes but the file ends {len(data) - start} bytes later",
                              truncated=True)
        parts.append(bytes(data[start:start + length]))
        position = start + length + (-length % 4)
        if flag in (_WHOLE, _LAST):
            return _MAGIC_BYTES.join(parts), position


# ----------------------------------------------------------------------------------------- the index
def read_index(path: str | Path) -> dict[int, int]:
    """``key -> byte offset`` from an ``.idx`` file."""
    index: dict[int, int] = {}
    for number, line in _text_lines(Path(path), "RecordIO index (.idx)"):
        try:
            key, offset = (int(v) for v in line.split("\t"))
            if key < 0 or offset < 0:
                raise ValueError
        except ValueError:
            raise RecordIOError(f"{path}:{number}: expected 'key<TAB>offset', got {line!r}; "
                                + REBUILD_HINT.format(rec=Path(path).with_suffix(".rec"))) from None
        if key in index:
            raise RecordIOError(f"{path}:{number}: key {key} appears twice; "
                                + REBUILD_HINT.format(rec=Path(path).with_suffix(".rec")))
        index[key] = offset
    return index


def _text_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Numbered non-blank lines of a small text file of a packed set; a binary, non-UTF-8 or huge file is a
    :class:`RecordIOError` naming it (:func:`stn_face.files.read_text_lines`)."""
    from stn_face.files import read_text_lines

    try:
        return read_text_lines(path, what)
    except InputError as error:
        raise RecordIOError(str(error)) from None


def write_index(path: Path, entries: list[tuple[int, int]]) -> None:
    path.write_text("".join(f"{key}\t{offset}\n" for key, offset in entries))


class RecordFile:
    """Random access to a ``.rec`` through its ``.idx``, with one OS file handle per process.

    The handle is opened on the first read in each process, so every DataLoader worker reads through its
    own (forked processes never share a file offset) and the object pickles without it. Each read is one
    ``pread`` of the record's span (its offset to the next record's). Opening checks the index against
    the file's size, so a cut ``.rec`` or a foreign ``.idx`` fails before any training.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise MissingInputError(f"{self.rec_path} does not exist")
        if not self.idx_path.is_file():
            raise MissingInputError(f"{self.idx_path} is missing beside {self.rec_path}; make it with "
                                    f"`stn-face-pack index {self.rec_path}`")
        self.index = read_index(self.idx_path)
        if not self.index:
            raise RecordIOError(f"{self.idx_path} lists no record; " + REBUILD_HINT.format(rec=self.rec_path))
        self.size = self.rec_path.stat().st_size
        ordered = sorted(self.index.items(), key=lambda item: item[1])
        last_key, last_offset = ordered[-1]
        if last_offset + _FRAME.size > self.size:
            raise RecordIOError(
                f"{self.idx_path} puts record {last_key} at byte {last_offset}, but {self.rec_path} has only "
                f"{self.size} bytes: the .rec is truncated (an interrupted copy?) or the .idx belongs to another "
                f".rec; copy the .rec again, or rebuild the index with `stn-face-pack index {self.rec_path}`")
        self._end = {key: end for (key, _), (_, end) in zip(ordered, [*ordered[1:], (None, self.size)])}
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _where(self, key: int) -> str:
        return f"{self.rec_path} record {key} (byte {self.index[key]})"

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return self._fd

    def read_raw(self, key: int) -> bytes:
        if key not in self.index:
            raise RecordIOError(f"record {key} is not in {self.idx_path}; " + REBUILD_HINT.format(rec=self.rec_path))
        offset = self.index[key]
        try:
            payload, _ = unframe(os.pread(self._handle(), self._end[key] - offset, offset))
        except _FrameError as error:
            mismatch = f"{self.idx_path} does not match {self.rec_path}"
            if not error.truncated:
                problem, fix = error, f"{mismatch} or the .rec is damaged: " + REBUILD_HINT.format(rec=self.rec_path)
            elif self._end[key] < self.size:  # cut short by the next offset of the index, not by the file's end
                problem, fix = "it runs past where train.idx puts the next record", f"{mismatch}: " + \
                    REBUILD_HINT.format(rec=self.rec_path)
            else:
                problem, fix = error, f"{self.rec_path} is truncated (an interrupted copy?): copy or download it again"
            raise RecordIOError(f"{self._where(key)}: {problem}; {fix}") from None
        return payload

    def read(self, key: int) -> Record:
        return unpack(self.read_raw(key), self._where(key))

    def check(self, count: int) -> None:
        """Check the frame (magic and length) of ``count`` records spread evenly over the index, the last
        one always (``count < 0``: every record)."""
        keys = sorted(self.index, key=self.index.__getitem__)
        if 0 <= count < len(keys):
            picks = np.unique(np.linspace(0, len(keys) - 1, max(count, 1)).round().astype(int))
            keys = [keys[i] for i in picks]
        for key in keys:
            self.read_raw(key)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordWriter:
    """Appends records (keys 0, 1, ...) and writes the ``.idx`` when closed. Both files are written under
    temporary names and renamed once whole: a killed packing leaves no ``.rec`` that looks complete."""

    def __init__(self, rec_path: str | Path) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = self.rec_path.with_suffix(".idx")
        self._partial = self.rec_path.with_name(self.rec_path.name + ".partial")
        self._file = open(self._partial, "wb")
        self.entries: list[tuple[int, int]] = []

    def write(self, payload: bytes) -> int:
        key = len(self.entries)
        self.entries.append((key, self._file.tell()))
        self._file.write(frame(payload))
        return key

    def close(self) -> None:
        self._file.close()
        partial_idx = self.idx_path.with_name(self.idx_path.name + ".partial")
        write_index(partial_idx, self.entries)
        os.replace(self._partial, self.rec_path)
        os.replace(partial_idx, self.idx_path)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
            self._partial.unlink(missing_ok=True)


def write_records(rec_path: str | Path, payloads: list[bytes]) -> None:
    """Write payloads as records ``0..n-1`` with their ``.idx``."""
    with RecordWriter(rec_path) as writer:
        for payload in payloads:
            writer.write(payload)


def rebuild_index(rec_path: str | Path) -> int:
    """Write ``<rec>.idx`` from a sequential scan of the ``.rec`` (keys 0, 1, ... in file order, as
    insightface's sets are written); a damaged record stops it with its byte offset. Returns the count."""
    rec_path = Path(rec_path)
    if not rec_path.is_file():
        raise MissingInputError(f"{rec_path} does not exist; pass the train.rec (or the folder holding it)")
    data = np.memmap(rec_path, dtype=np.uint8, mode="r") if rec_path.stat().st_size else np.zeros(0, np.uint8)
    view, entries, position = memoryview(data), [], 0
    while position < len(view):
        try:
            _, used = unframe(view[position:])
        except _FrameError as error:
            raise RecordIOError(f"{rec_path} record {len(entries)} (byte {position}): {error}; the records before "
                                "it are whole, the .rec is damaged from there on: copy or download it again") from None
        entries.append((len(entries), position))
        position += used
    write_index(rec_path.with_suffix(".idx"), entries)
    return len(entries)


# ------------------------------------------------------------------------------------ packed datasets
@dataclass
class PackedSet:
    """An insightface training folder opened for reading: the image records' keys, the identity count and
    names (``identities.txt``, else ``"0"``, ``"1"``, ...), and the image size from ``property``."""

    directory: Path
    records: RecordFile
    keys: np.ndarray
    num_classes: int
    image_size: tuple[int, int] | None
    class_names: list[str] = field(default_factory=list)


def read_property(path: Path) -> tuple[int, tuple[int, int] | None]:
    """``(identities, (height, width))`` of a ``property`` file (``85742,112,112``)."""
    text = " ".join(line for _, line in _text_lines(path, "property file")).strip()
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) not in (1, 3) or values[0] < 1 or not all(0 < v <= MAX_IMAGE_SIDE for v in values[1:]):
            raise ValueError
    except ValueError:
        raise RecordIOError(f"{path}: expected '<identities>,<height>,<width>' (like 85742,112,112), got "
                            f"{text[:60]!r}; write the line yourself or re-pack with stn-face-pack rec") from None
    return values[0], (values[1], values[2]) if len(values) == 3 else None


def open_packed(directory: str | Path, check_records: int = 1000) -> PackedSet:
    """Open ``directory/train.rec`` + ``train.idx`` (+ ``property``), checking ``check_records`` record
    frames (:meth:`RecordFile.check`) and that the index, the header record and ``property`` agree."""
    directory = Path(directory).expanduser()
    if not (directory / REC_FILE).is_file():
        raise MissingInputError(
            f"data.path={directory} holds no {REC_FILE}; point it at an insightface training folder (train.rec, "
            "train.idx, property), or make one from prepared crops with `stn-face-pack rec CROPS DIR`")
    records = RecordFile(directory / REC_FILE, directory / IDX_FILE)
    records.check(check_records)
    keys = sorted(records.index)
    identities_in_header = None
    if 0 in records.index:
        first = records.read(0)
        if first.flag > 0 and len(first.label) >= 2:  # insightface's header record
            start, end = _header_range(records, first.label)
            missing = [k for k in range(1, start) if k not in records.index]
            if missing:
                raise RecordIOError(
                    f"{records.idx_path} lacks {len(missing)} of the image records 1..{start - 1} the header record "
                    f"of {records.rec_path} announces (first: {missing[:3]}): the .idx belongs to another .rec; "
                    + REBUILD_HINT.format(rec=records.rec_path))
            keys = list(range(1, start))
            identities_in_header = end - start if end > start else None
    property_path = directory / PROPERTY_FILE
    num_classes, image_size = read_property(property_path) if property_path.is_file() else (None, None)
    if num_classes is None:
        if identities_in_header is None:
            raise MissingInputError(f"{property_path} is missing and {records.rec_path} has no header record giving "
                                    "the identity count; write '<identities>,112,112' into it")
        num_classes = identities_in_header
    elif identities_in_header is not None and identities_in_header != num_classes:
        raise RecordIOError(f"{property_path} says {num_classes} identities but the header record of "
                            f"{records.rec_path} has {identities_in_header} identity records: they come from "
                            "different sets; use the property file shipped with this train.rec")
    if num_classes > len(records.index):  # every identity has a record: a bigger count is damage, not a set
        raise RecordIOError(f"{property_path} says {num_classes} identities but {records.idx_path} lists only "
                            f"{len(records.index)} records; use the property file shipped with this train.rec")
    names_path = directory / NAMES_FILE
    names = [line for _, line in _text_lines(names_path, "identity names file")] if names_path.is_file() else []
    if names and len(names) != num_classes:
        raise RecordIOError(f"{names_path} names {len(names)} identities, {property_path} says {num_classes}; "
                            "delete the names file or re-pack the set")
    return PackedSet(directory, records, np.asarray(keys, dtype=np.int64), num_classes, image_size,
                     names or [str(i) for i in range(num_classes)])


def _header_range(records: RecordFile, labels: np.ndarray) -> tuple[int, int]:
    """The ``(first identity record, end)`` of insightface's header record, checked against the index
    before anything is counted or allocated for it."""
    start, end = float(labels[0]), float(labels[1])
    if not (np.isfinite(start) and np.isfinite(end) and 1 <= start <= end <= len(records.index) + 1):
        raise RecordIOError(f"{records.rec_path} record 0 announces records {start:g}..{end:g}, but "
                            f"{records.idx_path} lists {len(records.index)} records: the header record is damaged "
                            "or the .idx belongs to another .rec; " + REBUILD_HINT.format(rec=records.rec_path))
    return int(start), int(end)


def iter_insightface_rec(directory: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """``(key, identity label, encoded image)`` for every image record of an insightface training folder."""
    packed = open_packed(directory, check_records=0)
    with packed.records as records:
        for key in packed.keys.tolist():
            record = records.read(key)
            if not (np.isfinite(record.identity) and 0 <= record.identity < packed.num_classes):
                raise RecordIOError(f"{records.rec_path} record {key} has label {record.identity:g}, not one of the "
                                    f"{packed.num_classes} identities; the .rec is damaged or not a training set")
            yield key, int(record.identity), record.payload


def export_to_folders(directory: str | Path, output: str | Path) -> int:
    """Unpack an insightface training folder's ``.rec`` into ``output/<label>/<key>.jpg`` (the records' own bytes: a
    ``data=folder`` root of the same faces). Returns the number of images written."""
    output = Path(output)
    count = 0
    for key, label, payload in iter_insightface_rec(directory):
        folder = output / f"{label:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key:08d}.jpg").write_bytes(payload)
        count += 1
    return count
