"""The folder packer: identity folders in, insightface's train.rec / .idx / property out, read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_face.data.pack import pack_folders
from stn_face.data.recordio import open_packed
from stn_face.errors import InputError, MissingInputError


def test_pack_and_read_back(tmp_path: Path, write_faces) -> None:
    root = write_faces(tmp_path / "faces", {"alice": 3, "bob": 2}, size=20)
    (root / "bob" / "09.jpg").write_bytes(b"broken")
    summary = pack_folders(root, tmp_path / "pack")
    assert (summary.images, summary.identities, list(summary.skipped)) == (5, 2, [str(root / "bob" / "09.jpg")])
    assert "5 images of 2 identities" in summary.format() and "1 unreadable" in summary.format()
    packed = open_packed(tmp_path / "pack")
    assert (len(packed.keys), packed.num_classes, packed.image_size) == (5, 2, (20, 20))
    assert packed.class_names == ["alice", "bob"]


def test_bad_folders_are_input_errors(tmp_path: Path, write_faces) -> None:
    with pytest.raises(MissingInputError, match="is not a folder"):
        pack_folders(tmp_path / "missing", tmp_path / "pack")
    root = write_faces(tmp_path / "faces", {"alice": 1, "bob": 1})
    with pytest.raises(InputError, match="inside the input"):
        pack_folders(root, root / "pack")
