"""Writing files so that a killed process leaves the old file or the new one, never half of one.

One helper for every result file the project replaces (metrics.json, ROC files, checkpoints, manifests,
crops, ``.bin`` sets): the data goes to a temporary file beside the target (same file system), is
flushed to disk, then ``os.replace`` puts it in place. The temporary file is created with the usual
permissions (``0o666`` less the umask, like ``open(path, "w")``), so results stay readable by the
group on a shared machine (``tempfile.mkstemp`` would make them owner-only). Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["atomic_write", "check_data_file", "check_file_name", "check_npz", "check_pickle_stream", "check_relative_path", "check_zip_archive",
           "contained_path",
           "read_text_lines"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", fsync: bool = True,
                 **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path, "w" | "wb") as handle:`` write to ``handle``; ``path`` appears complete on exit.

    On an exception (or a kill) the temporary file is removed and ``path`` is left as it was. The
    parent folder is created. ``fsync=False`` skips the flush to disk (thousands of small crops: a
    power cut may then lose the newest files, never leave half of one under its name). ``open_kwargs``
    go to :func:`open` (``newline=""``, ``encoding=...``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with open(descriptor, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------- reading files from strangers
#: A zip member may inflate to at most this many times its stored size (zeros deflate ~1000x): beyond it
#: the archive is a compression bomb, not data.
MAX_COMPRESSION_RATIO = 200


def _hostile(message: str) -> Exception:
    from stn_face.errors import HostileInputError

    return HostileInputError(message)


def check_data_file(path: str | os.PathLike, what: str) -> int:
    """The size of ``path``, a file that must exist and hold something; else one input error naming it."""
    from stn_face.errors import InputError, MissingInputError

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass the {what} itself")
    size = path.stat().st_size
    if size == 0:
        raise _hostile(f"{path} is empty (0 bytes): not a {what}")
    return size


def check_zip_archive(path: str | os.PathLike, what: str, stored_only: bool = False,
                      verify_crc: bool = False) -> list[zipfile.ZipInfo]:
    """The members of the zip archive ``path`` (a torch checkpoint, an ``.npz``), checked without inflating
    anything: readable directory, no member that inflates to more than :data:`MAX_COMPRESSION_RATIO` x its
    stored size, none compressed when ``stored_only`` (``torch.save`` stores, never deflates), no absolute
    or ``..`` names. ``verify_crc``: also read every stored member once and compare its CRC-32 (a flipped
    bit in a tensor is otherwise invisible; about 1 s per GB)."""
    size = check_data_file(path, what)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except Exception as error:  # noqa: BLE001 - BadZipFile, NotImplementedError (a forged version), struct errors
        raise _hostile(f"{path} is not a readable {what} (its zip directory is damaged: "
                       f"{' '.join(str(error).split())[:160] or type(error).__name__})") from None
    for member in members:
        if member.header_offset + member.compress_size > size:
            raise _hostile(f"{path} is truncated or damaged: member {member.filename!r} claims "
                           f"{member.compress_size} bytes past the end of the {size}-byte file")
        if member.compress_type != zipfile.ZIP_STORED:
            if stored_only:
                raise _hostile(f"{path} holds a compressed member {member.filename!r}; a {what} written by "
                               "torch.save stores its records uncompressed")
            if member.file_size > MAX_COMPRESSION_RATIO * member.compress_size + 2**20:
                raise _hostile(f"{path}: member {member.filename!r} claims to inflate {member.compress_size} "
                               f"bytes to {member.file_size} (a compression bomb); not a {what}")
        elif member.file_size != member.compress_size:
            raise _hostile(f"{path} is damaged: stored member {member.filename!r} claims {member.file_size} "
                           f"bytes but holds {member.compress_size}")
        name = member.filename
        if "\0" in name or name.startswith("/") or ".." in Path(name).parts:
            raise _hostile(f"{path} holds a member with an unsafe name {name!r}")
    if verify_crc:
        import zlib

        with open(path, "rb") as stream, zipfile.ZipFile(stream) as archive:
            for member in members:
                crc = 0
                try:
                    with archive.open(member) as record:  # stored members only here: no inflating
                        while chunk := record.read(1 << 22):
                            crc = zlib.crc32(chunk, crc)
                except Exception as error:  # noqa: BLE001 - a bad CRC, a forged header or version, ...
                    raise _hostile(f"{path} is damaged: member {member.filename!r} cannot be read "
                                   f"({' '.join(str(error).split())[:160] or type(error).__name__})") from None
                if crc != member.CRC:
                    raise _hostile(f"{path} is damaged: member {member.filename!r} fails its CRC-32 check "
                                   "(a flipped bit or a partial copy)")
    return members


def check_npz(path: str | os.PathLike, what: str = "embeddings .npz") -> None:
    """Check an ``.npz`` before ``np.load`` reads it: a zip of ``.npy`` arrays whose headers claim no
    more bytes than each member holds (numpy would allocate what a header claims first), no object
    arrays. Raises :class:`~stn_face.errors.HostileInputError` naming the file and the problem."""
    import numpy as np

    members = check_zip_archive(path, what)
    if not members:
        raise _hostile(f"{path} is an empty archive: not an {what}")
    with zipfile.ZipFile(path) as archive:
        for member in members:
            try:
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = read_header(stream, max_header_size=10_000)
            except Exception as error:  # noqa: BLE001 - a damaged member, a bad header
                raise _hostile(f"{path}: member {member.filename!r} is not a readable .npy array "
                               f"({' '.join(str(error).split())[:160]})") from None
            if dtype.hasobject:
                raise _hostile(f"{path}: array {member.filename!r} holds Python objects (a pickle), which "
                               "are never loaded; store names as strings and embeddings as floats")
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if claimed > member.file_size:
                raise _hostile(f"{path}: array {member.filename!r} claims shape {tuple(shape)} of {dtype} "
                               f"({claimed} bytes) but holds {member.file_size} bytes (truncated or forged)")


def check_relative_path(name: str, what: str = "name") -> str:
    """``name`` when it is a relative path that stays below whatever folder it is joined to; else an input
    error: empty, absolute, a drive, ``..``, a NUL byte or a control character. Pure text, no file system."""
    from stn_face.errors import InputError

    text = str(name)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if (not text.strip() or not text.isprintable() or text.startswith(("/", "\\")) or ".." in parts
            or (len(text) > 1 and text[1] == ":")):
        raise InputError(f"unsafe {what} {text!r}: a name read from a file must be a relative path inside "
                         "its folder (no '..', absolute path, NUL or control character)")
    return text


def contained_path(root: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``root / name`` for a relative ``name`` taken from a file (an identity folder, an image name), or an
    input error when it would leave ``root`` (:func:`check_relative_path`, then through a symlink)."""
    from stn_face.errors import InputError

    target = Path(root) / check_relative_path(name, what)
    if not target.resolve().is_relative_to(Path(root).resolve()):
        raise InputError(f"unsafe {what} {name!r}: it leads outside {root}")
    return target


#: The largest text file (pair file, split file, manifest, ``.idx``) read whole: far above any real one
#: (LFW's pairs.txt is 110 KB, a 10-million-image manifest about 1 GB is streamed by its own reader).
MAX_TEXT_BYTES = 256 * 2**20


def read_text_lines(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_BYTES) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file with their 1-based numbers, right-stripped; one input error
    naming the file for a file that is empty of text, too large, binary (NUL bytes) or not UTF-8."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise _hostile(f"{path} holds {size} bytes, more than any {what} ({max_bytes} at most): not a {what}")
    data = path.read_bytes()
    if b"\0" in data:
        raise _hostile(f"{path} holds NUL bytes: a binary file, not a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _hostile(f"{path} is not UTF-8 text (byte {error.start}): not a {what}") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines, like open()
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def check_file_name(name: str) -> str:
    """``name`` when it is one safe path component (a person, a video folder); ``ValueError`` otherwise:
    empty, ``.``/``..``, a separator, a NUL byte or a control character."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or not name.isprintable():
        raise ValueError(f"unsafe name {name!r}: names in this file must be single folder or file names "
                         "(no '/', '..', NUL or control characters)")
    return name


_MEMO_OPS = {"BINPUT", "LONG_BINPUT", "PUT", "BINGET", "LONG_BINGET", "GET"}


def check_pickle_stream(data: bytes, where: str, what: str) -> None:
    """Scan a pickle (never unpickle it) before a restricted unpickler reads it: every length it claims
    (bytes, strings) must be backed by the data, and no memo index may exceed the number of operations
    (CPython's unpickler allocates both before reading). ``ValueError`` naming ``where`` otherwise."""
    import io
    import pickletools

    operations = 0
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            operations += 1
            if op.name in _MEMO_OPS and isinstance(arg, int) and arg > operations:
                raise ValueError(f"memo index {arg} after {operations} operations")
    except Exception as error:  # noqa: BLE001 - pickletools says what is wrong and where
        raise ValueError(f"{where} is not a readable {what}: damaged pickle "
                         f"({' '.join(str(error).split())[:160]})") from None
