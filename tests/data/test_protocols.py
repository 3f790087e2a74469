"""Protocol readers: the real LFW and YTF files, and malformed files written by the tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stn_face.data.protocols import (
    MissingImagesError,
    Pair,
    ProtocolFormatError,
    check_images_exist,
    filter_available,
    lfw_image_path,
    missing_images,
    read_lfw_pairs,
    read_people,
    read_ytf_splits,
    unique_images,
)

YTF_HEADER = "split number, pair number, first name, second name, is same:\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ real LFW / YTF files


@pytest.mark.data
def test_lfw_view2_pairs_real(lfw_dir: Path) -> None:
    pairs = read_lfw_pairs(lfw_dir / "pairs.txt")
    assert len(pairs) == 6000
    assert pairs[0] == Pair(
        "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True, 0
    )
    assert pairs[300].left == "Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg" and not pairs[300].same
    # 10 folds in file order, each 300 same then 300 different
    for fold in range(10):
        block = pairs[fold * 600 : (fold + 1) * 600]
        assert {p.fold for p in block} == {fold}
        assert all(p.same for p in block[:300]) and not any(p.same for p in block[300:])
        assert all(p.left.split("/")[0] == p.right.split("/")[0] for p in block[:300])
    images = check_images_exist(pairs, lfw_dir / "lfw-deepfunneled")
    assert images == unique_images(pairs) and len(images) == len(set(images)) == 7701


@pytest.mark.data
def test_lfw_view1_pairs_real(lfw_dir: Path) -> None:
    for name, same in (("pairsDevTrain.txt", 1100), ("pairsDevTest.txt", 500)):
        pairs = read_lfw_pairs(lfw_dir / name)
        assert Counter(p.same for p in pairs) == {True: same, False: same}
        assert {p.fold for p in pairs} == {0}
        check_images_exist(pairs, lfw_dir / "lfw-deepfunneled")


@pytest.mark.data
def test_lfw_people_real(lfw_dir: Path) -> None:
    people = read_people(lfw_dir / "people.txt")
    assert len(people) == 5749 and sum(p.count for p in people) == 13233
    assert sorted({p.fold for p in people}) == list(range(10))
    train = read_people(lfw_dir / "peopleDevTrain.txt")
    test = read_people(lfw_dir / "peopleDevTest.txt")
    assert (len(train), sum(p.count for p in train)) == (4038, 9525)
    assert len(test) == 1711 and not {p.name for p in train} & {p.name for p in test}
    names = read_people(lfw_dir / "lfw-names.txt")
    assert {(p.name, p.count) for p in names} == {(p.name, p.count) for p in people}


@pytest.mark.data
def test_ytf_splits_real(ytf_dir: Path, tmp_path: Path) -> None:
    pairs = read_ytf_splits(ytf_dir / "splits.txt")
    assert len(pairs) == 5000
    assert Counter(p.fold for p in pairs) == {fold: 500 for fold in range(10)}
    assert sum(p.same for p in pairs) == 2500
    assert pairs[0] == Pair("Sadie_Frost/1", "Sadie_Frost/5", True, 0)
    # the official file has a header line: both layouts read the same
    with_header = write(tmp_path, "splits.txt", YTF_HEADER + (ytf_dir / "splits.txt").read_text())
    assert read_ytf_splits(with_header) == pairs
    frames = ytf_dir / "frame_images_DB"
    assert filter_available(pairs, frames, "ytf") == [Pair("Alek_Wek/1", "Alek_Wek/4", True, 8)]
    assert filter_available(pairs, frames, "video") == filter_available(pairs, frames, "ytf")
    with pytest.raises(MissingImagesError) as error:
        check_images_exist(pairs, frames, "ytf")
    message = str(error.value)
    assert "3218 of 3226 video folders" in message and str(frames) in message and "To fix" in message


# ------------------------------------------------------------------ formats, written here


def test_lfw_image_path_zero_pads() -> None:
    assert lfw_image_path("George_W_Bush", 12) == "George_W_Bush/George_W_Bush_0012.jpg"


def test_view1_layout_and_folds(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.txt", "1\nA\t1\t2\nA\t1\tB\t3\n")
    assert read_lfw_pairs(path) == [
        Pair("A/A_0001.jpg", "A/A_0002.jpg", True, 0),
        Pair("A/A_0001.jpg", "B/B_0003.jpg", False, 0),
    ]
    path = write(tmp_path, "view2.txt", "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t2\tD\t1\n")
    assert [(p.same, p.fold) for p in read_lfw_pairs(path)] == [(True, 0), (False, 0), (True, 1), (False, 1)]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1\nA\t1\t2\nA\t1\tB\n", 3, "4 fields"),  # different pair with 3 fields
        ("1\nA\t1\tB\t2\nA\t1\tB\t1\n", 2, "3 fields"),  # same pair with 4 fields
        ("1\nA\tx\t2\nA\t1\tB\t1\n", 2, "integer"),
        ("2\t1\nA\t1\t2\nA\t1\tB\t1\n", None, "announces 2 fold"),  # too few lines
        ("ten\n", 1, "integer"),
    ],
)
def test_lfw_pairs_malformed(tmp_path: Path, text: str, line: int | None, words: str) -> None:
    path = write(tmp_path, "pairs.txt", text)
    with pytest.raises(ProtocolFormatError) as error:
        read_lfw_pairs(path)
    where = f"{path}:{line}:" if line else f"{path}:"
    assert str(error.value).startswith(where) and words in str(error.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1, 1, A/1, A/2, 2\n", 1),
        ("1, 1, A/1, A/2\n", 1),
        ("1, 1, A/1, A/2, 1\n1, 2, A, B/1, 0\n", 2),
        (YTF_HEADER + "1, 1, A/1, A/2, 1\nx, 2, A/1, B/1, 0\n", 3),
        ("0, 1, A/1, A/2, 1\n", 1),
    ],
)
def test_ytf_malformed(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, "splits.txt", text)
    with pytest.raises(ProtocolFormatError, match=rf"^{path}:{line}:"):
        read_ytf_splits(path)


def test_people_layouts_and_errors(tmp_path: Path) -> None:
    folded = write(tmp_path, "people.txt", "2\n1\nA\t3\n2\nB\t1\nC\t2\n")
    assert [(p.name, p.count, p.fold) for p in read_people(folded)] == [("A", 3, 0), ("B", 1, 1), ("C", 2, 1)]
    flat = write(tmp_path, "dev.txt", "2\nA\t3\nB\t1\n")
    assert [p.fold for p in read_people(flat)] == [0, 0]
    with pytest.raises(ProtocolFormatError, match="header says 3 people"):
        read_people(write(tmp_path, "bad.txt", "3\nA\t3\nB\t1\n"))
    with pytest.raises(ProtocolFormatError, match=r":3: expected 'name"):
        read_people(write(tmp_path, "bad2.txt", "2\nA\t3\nB\n"))


def test_unique_images_first_seen_order() -> None:
    pairs = [Pair("b", "a", True, 0), Pair("a", "c", False, 0), Pair("d", "b", False, 1)]
    assert unique_images(pairs) == ["b", "a", "c", "d"]


def test_missing_images_one_clear_error(tmp_path: Path) -> None:
    for name in ("A/A_0001.jpg", "A/A_0002.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    pairs = [Pair(lfw_image_path("A", 1), lfw_image_path("A", 2), True, 0)] + [
        Pair(lfw_image_path("A", 1), lfw_image_path(f"P{i}", 1), False, 0) for i in range(8)
    ]
    assert missing_images(pairs, tmp_path) == [lfw_image_path(f"P{i}", 1) for i in range(8)]
    with pytest.raises(MissingImagesError) as error:
        check_images_exist(pairs, tmp_path)
    message = str(error.value)
    assert message.startswith("8 of 10 images")
    assert "P0/P0_0001.jpg" in message and "P4/P4_0001.jpg" in message and "P5/P5_0001.jpg" not in message
    assert "and 3 more" in message and str(tmp_path) in message and "To fix" in message
    assert check_images_exist(pairs[:1], tmp_path) == ["A/A_0001.jpg", "A/A_0002.jpg"]
    assert filter_available(pairs, tmp_path) == pairs[:1]
    with pytest.raises(ValueError, match="kind"):
        missing_images(pairs, tmp_path, "movie")
