"""Identity folders and the image datasets built on them, on small written images."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_face.data.augment import eval_transform
from stn_face.data.datasets import EmptyDatasetError, FaceImageDataset, scan_identity_folders


def test_scan_keeps_sorted_identities_with_enough_images(tmp_path: Path, write_faces) -> None:
    root = write_faces(tmp_path, {"carol": 3, "alice": 2, "bob": 1})
    (root / "alice" / "notes.txt").write_text("not an image")
    samples, names = scan_identity_folders(root, min_images_per_identity=2)
    assert names == ["alice", "carol"]
    assert [(s.path.name, s.label) for s in samples] == [("00.jpg", 0), ("01.jpg", 0), ("00.jpg", 1), ("01.jpg", 1),
                                                         ("02.jpg", 1)]
    samples, names = scan_identity_folders(root, max_identities=2, max_images_per_identity=1)
    assert names == ["alice", "bob"] and len(samples) == 2
    assert scan_identity_folders(root, identities=["bob", "carol"])[1] == ["bob", "carol"]


def test_scan_names_the_folder_when_nothing_is_left(tmp_path: Path, write_faces) -> None:
    with pytest.raises(EmptyDatasetError, match="does not exist"):
        scan_identity_folders(tmp_path / "missing")
    write_faces(tmp_path, {"alice": 2})
    with pytest.raises(EmptyDatasetError, match="at least 2 identities"):
        scan_identity_folders(tmp_path)


def test_an_unreadable_image_is_replaced_by_the_next_one(tmp_path: Path, write_faces) -> None:
    root = write_faces(tmp_path, {"alice": 2})
    broken = root / "alice" / "00.jpg"
    broken.write_bytes(b"not a jpeg")
    dataset = FaceImageDataset(sorted((root / "alice").iterdir()), [7, 8], eval_transform(16))
    image, label = dataset[0]
    assert image.shape == (3, 16, 16) and label == 8  # item 1 stands in for the broken item 0
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    with pytest.raises(ValueError, match="differ in length"):
        FaceImageDataset([broken], [0, 1], eval_transform(16))
