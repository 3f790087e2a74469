"""Readers for the verification protocols: LFW pairs and people lists, YouTube Faces splits.

Every reader returns plain Python objects (no images are opened) and fails on the first malformed
line with an error naming the file and the line number. Paths in a :class:`Pair` are relative to an
image root: ``Name/Name_0001.jpg`` for LFW (index zero-padded to 4 digits), ``Name/video`` (a folder
of frames) for YTF.

File formats (as distributed by the benchmarks' authors):

- LFW View 2 ``pairs.txt``: header ``<folds>\\t<n>``, then for each fold ``n`` same-person lines
  ``name i j`` followed by ``n`` different-person lines ``name1 i name2 j`` (tab separated).
- LFW View 1 ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``<n>``, then ``n`` same and ``n``
  different lines; all pairs get fold 0.
- LFW people files: ``peopleDevTrain.txt`` / ``peopleDevTest.txt`` are ``<count>`` then ``name\\tcount``
  lines; ``people.txt`` is ``<folds>`` then, per fold, ``<count>`` and that many ``name\\tcount`` lines;
  ``lfw-names.txt`` is ``name\\tcount`` lines without a header.
- YTF ``splits.txt``: ``split, pair, Name/video, Name/video, same`` (``same`` is 1 or 0), with or
  without the official header line ``split number, pair number, first name, second name, is same:``.
  Splits are numbered from 1; ``Pair.fold`` is ``split - 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stn_face.errors import InputError, MissingInputError

__all__ = [
    "MissingImagesError",
    "Pair",
    "Person",
    "ProtocolFormatError",
    "check_images_exist",
    "filter_available",
    "lfw_image_path",
    "missing_images",
    "read_lfw_pairs",
    "read_people",
    "read_ytf_splits",
    "unique_images",
]

#: How many missing paths an error message lists before saying "and N more".
_SHOW_MISSING = 5


@dataclass(frozen=True)
class Pair:
    """One verification pair: two paths relative to the image root, the label and its fold (0-based)."""

    left: str
    right: str
    same: bool
    fold: int


@dataclass(frozen=True)
class Person:
    """One entry of an LFW people file: a name, its image count and its fold (0 without folds)."""

    name: str
    count: int
    fold: int


class ProtocolFormatError(InputError, ValueError):
    """A protocol file does not have the expected format; the message names the file and line."""


class MissingImagesError(MissingInputError):
    """Images (or YTF video folders) named by a protocol are not under the image root."""


def lfw_image_path(name: str, index: int) -> str:
    """The LFW path of the ``index``-th (1-based) image of ``name``: ``Name/Name_0001.jpg``."""
    return f"{name}/{name}_{index:04d}.jpg"


# --------------------------------------------------------------------------------------------------
# Low-level line handling


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based line numbers, right-stripped."""
    if not path.is_file():
        raise MissingInputError(f"protocol file not found: {path}")
    from stn_face.files import read_text_lines

    return read_text_lines(path, "protocol file")


def _fail(path: Path, number: int | None, what: str) -> ProtocolFormatError:
    where = f"{path}:{number}" if number is not None else str(path)
    return ProtocolFormatError(f"{where}: {what}")


def _check_name(path: Path, number: int, name: str) -> None:
    """A name from a protocol file becomes a path below the image root and the crop cache: one folder
    level, never ``..``, a separator or a NUL byte (:func:`stn_face.files.check_file_name`)."""
    from stn_face.files import check_file_name

    try:
        check_file_name(name)
    except ValueError as error:
        raise _fail(path, number, str(error)) from None


def _to_int(path: Path, number: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _fail(path, number, f"expected an integer {what}, got {text!r}") from None


# --------------------------------------------------------------------------------------------------
# LFW pairs


def _parse_lfw_pair_line(path: Path, number: int, line: str, same: bool, fold: int) -> Pair:
    fields = line.split()
    if same:
        if len(fields) != 3:
            raise _fail(path, number, f"expected a same-person pair 'name i j' (3 fields), got {line!r}")
        name, i, j = fields
        _check_name(path, number, name)
        i_num = _to_int(path, number, i, "image index")
        j_num = _to_int(path, number, j, "image index")
        return Pair(lfw_image_path(name, i_num), lfw_image_path(name, j_num), True, fold)
    if len(fields) != 4:
        raise _fail(
            path, number, f"expected a different-person pair 'name1 i name2 j' (4 fields), got {line!r}"
        )
    name1, i, name2, j = fields
    _check_name(path, number, name1)
    _check_name(path, number, name2)
    i_num = _to_int(path, number, i, "image index")
    j_num = _to_int(path, number, j, "image index")
    return Pair(lfw_image_path(name1, i_num), lfw_image_path(name2, j_num), False, fold)


def read_lfw_pairs(path: str | Path) -> list[Pair]:
    """Read an LFW pairs file: View 2 ``pairs.txt`` (10 folds) or View 1 ``pairsDev*.txt`` (fold 0).

    The header decides the layout: two integers ``folds n`` give ``folds`` blocks of ``n`` same then
    ``n`` different pairs (fold = block index, in file order); one integer ``n`` gives ``n`` same
    then ``n`` different pairs, all in fold 0. Raises :class:`ProtocolFormatError` naming the file and
    line for a malformed line, and when the number of lines disagrees with the header.
    """
    path = Path(path)
    lines = _numbered_lines(path)
    if not lines:
        raise _fail(path, None, "file is empty; expected a header 'folds\\tn' or 'n'")
    header_number, header = lines[0]
    header_fields = header.split()
    if len(header_fields) == 2:
        n_folds = _to_int(path, header_number, header_fields[0], "number of folds in the header")
        per_class = _to_int(path, header_number, header_fields[1], "pairs per class in the header")
    elif len(header_fields) == 1:
        n_folds = 1
        per_class = _to_int(path, header_number, header_fields[0], "number of same pairs in the header")
    else:
        raise _fail(path, header_number, f"expected a header 'folds\\tn' or 'n', got {header!r}")
    if n_folds < 1 or per_class < 1:
        raise _fail(path, header_number, f"header {header!r} must hold positive counts")

    body = lines[1:]
    expected = n_folds * 2 * per_class
    if len(body) != expected:
        raise _fail(
            path,
            None,
            f"header {header!r} announces {n_folds} fold(s) of {per_class} same + {per_class} different "
            f"pairs ({expected} lines) but the file has {len(body)} pair lines",
        )
    pairs = []
    for index, (number, line) in enumerate(body):
        fold, within = divmod(index, 2 * per_class)
        pairs.append(_parse_lfw_pair_line(path, number, line, within < per_class, fold))
    return pairs


# --------------------------------------------------------------------------------------------------
# LFW people


def read_people(path: str | Path) -> list[Person]:
    """Read an LFW people file (``people.txt`` with folds, ``peopleDev*.txt``, or ``lfw-names.txt``).

    Returns one :class:`Person` per line, in file order; ``fold`` is the 0-based fold for
    ``people.txt`` and 0 otherwise. Counts in the headers are checked against the lines that follow.
    """
    path = Path(path)
    lines = _numbered_lines(path)
    if not lines:
        raise _fail(path, None, "file is empty")

    def person(number: int, line: str, fold: int) -> Person:
        fields = line.split()
        if len(fields) != 2:
            raise _fail(path, number, f"expected 'name\\tcount' (2 fields), got {line!r}")
        return Person(fields[0], _to_int(path, number, fields[1], "image count"), fold)

    first_number, first = lines[0]
    if len(first.split()) == 2:  # lfw-names.txt: no header
        return [person(number, line, 0) for number, line in lines]
    if len(first.split()) != 1:
        raise _fail(path, first_number, f"expected a count header or 'name\\tcount', got {first!r}")
    header = _to_int(path, first_number, first, "count in the header")
    folded = len(lines) > 1 and len(lines[1][1].split()) == 1
    if not folded:  # peopleDevTrain / peopleDevTest: header = number of people
        if len(lines) - 1 != header:
            raise _fail(path, first_number, f"header says {header} people but {len(lines) - 1} follow")
        return [person(number, line, 0) for number, line in lines[1:]]

    people: list[Person] = []
    position = 1
    for fold in range(header):
        if position >= len(lines):
            raise _fail(path, None, f"header says {header} folds but the file ends after {fold}")
        number, line = lines[position]
        count = _to_int(path, number, line.strip(), f"people count for fold {fold + 1}")
        block = lines[position + 1 : position + 1 + count]
        if len(block) != count:
            raise _fail(
                path, number, f"fold {fold + 1} announces {count} people, file ends after {len(block)}"
            )
        people.extend(person(n, text, fold) for n, text in block)
        position += 1 + count
    if position != len(lines):
        raise _fail(path, lines[position][0], f"unexpected line after the {header} announced folds")
    return people


# --------------------------------------------------------------------------------------------------
# YouTube Faces


def read_ytf_splits(path: str | Path) -> list[Pair]:
    """Read YouTube Faces ``splits.txt``: ``split, pair, Name/video, Name/video, same``.

    A first line whose first field is not an integer is taken as the official header and skipped.
    ``fold`` is ``split - 1``; ``same`` must be 1 or 0.
    """
    path = Path(path)
    lines = _numbered_lines(path)
    if lines and not lines[0][1].split(",")[0].strip().isdigit():
        lines = lines[1:]
    if not lines:
        raise _fail(path, None, "file holds no pairs")
    pairs = []
    for number, line in lines:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5:
            raise _fail(path, number, f"expected 'split, pair, Name/video, Name/video, same', got {line!r}")
        split = _to_int(path, number, fields[0], "split number")
        _to_int(path, number, fields[1], "pair number")
        if fields[4] not in ("0", "1"):
            raise _fail(path, number, f"expected 'same' to be 1 or 0, got {fields[4]!r}")
        if split < 1:
            raise _fail(path, number, f"split numbers start at 1, got {split}")
        for video in fields[2:4]:
            if video.count("/") != 1 or not all(video.split("/")):
                raise _fail(path, number, f"expected a video 'Name/video', got {video!r}")
            for part in video.split("/"):
                _check_name(path, number, part)
        pairs.append(Pair(fields[2], fields[3], fields[4] == "1", split - 1))
    return pairs


# --------------------------------------------------------------------------------------------------
# Images named by a protocol


def unique_images(pairs: Iterable[Pair]) -> list[str]:
    """Every path named by ``pairs`` once, in first-seen order (left before right)."""
    seen: dict[str, None] = {}
    for pair in pairs:
        seen.setdefault(pair.left, None)
        seen.setdefault(pair.right, None)
    return list(seen)


#: ``kind`` values: what a protocol path names (an image file or a YTF video folder).
_KINDS = {"lfw": "image", "image": "image", "ytf": "video", "video": "video"}


def _kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(
            f"kind must be 'lfw'/'image' (image files) or 'ytf'/'video' (video folders), got {kind!r}"
        )
    return _KINDS[kind]


def missing_images(pairs: Iterable[Pair], root: str | Path, kind: str = "lfw") -> list[str]:
    """Paths named by ``pairs`` absent under ``root``: files for ``lfw``/``image``, folders for ``ytf``/``video``."""
    is_video = _kind(kind) == "video"
    root = Path(root)
    return [
        path
        for path in unique_images(pairs)
        if not ((root / path).is_dir() if is_video else (root / path).is_file())
    ]


def check_images_exist(pairs: Sequence[Pair], root: str | Path, kind: str = "lfw") -> list[str]:
    """Raise one :class:`MissingImagesError` if any image (or YTF video folder) is missing.

    The message says how many of how many are missing, the first few, the root searched and how to
    fix it. Returns the unique paths (first-seen order) when all are present.
    """
    root = Path(root)
    wanted = unique_images(pairs)
    missing = missing_images(pairs, root, kind)
    if not missing:
        return wanted
    is_video = _kind(kind) == "video"
    noun = "video folders" if is_video else "images"
    shown = ", ".join(missing[:_SHOW_MISSING])
    more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
    if not root.is_dir():
        hint = f"the root {root} does not exist"
    elif is_video:
        hint = (
            "point the root at the folder holding Name/video/ frame folders (YTF frame_images_DB or "
            "aligned_images_DB), or evaluate only the available pairs with filter_available()"
        )
    else:
        hint = (
            "point the root at the folder holding Name/Name_NNNN.jpg (e.g. $STN_FACE_DATA/lfw/"
            "lfw-deepfunneled, or the prepared crops under the cache folder; run stn-face-prepare "
            "if they are missing)"
        )
    raise MissingImagesError(
        f"{len(missing)} of {len(wanted)} {noun} named by the protocol are missing under {root}: "
        f"{shown}{more}. To fix: {hint}."
    )


def filter_available(pairs: Iterable[Pair], root: str | Path, kind: str = "lfw") -> list[Pair]:
    """The pairs whose two images (or video folders) both exist under ``root``, order kept."""
    pairs = list(pairs)
    missing = set(missing_images(pairs, root, kind))
    return [pair for pair in pairs if pair.left not in missing and pair.right not in missing]
