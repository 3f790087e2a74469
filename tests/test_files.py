"""atomic_write: whole files or none, with the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stn_face.files import atomic_write


def test_the_file_appears_whole_with_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new" / "metrics.json") as handle:
            handle.write('{"a": 1}\n')
            assert not (tmp_path / "new" / "metrics.json").exists()  # not in place before the end
    finally:
        os.umask(old)
    path = tmp_path / "new" / "metrics.json"
    assert path.read_text() == '{"a": 1}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the group, as open() would make it
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, "wb", fsync=False) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(path, "a"):
            pass
