"""The manifest: what a killed run leaves behind reads back as the rows that were complete."""

from __future__ import annotations

from stn_face.data.detect import Detection
from stn_face.data.prepare.manifest import (
    MANIFEST_NAME,
    ManifestAppender,
    manifest_row,
    parse_numbers,
    read_manifest,
    remove_outputs,
    write_manifest,
)


def test_rows_written_appended_and_cut_off(tmp_path):
    face = Detection((10.0, 20.0, 110.0, 140.0), 0.98765, [[40, 60], [80, 61], [60, 90], [45, 110], [75, 111]])
    first = [manifest_row("b/2.jpg", "b", "failed: empty file"),
             manifest_row("a/1.jpg", "a", "detected", "a/1.jpg", face)]
    write_manifest(tmp_path, first)
    with ManifestAppender(tmp_path) as manifest:  # a later run redoes b/2.jpg
        manifest.append(manifest_row("b/2.jpg", "b", "fallback_center", "b/2.jpg"))
    with open(tmp_path / MANIFEST_NAME, "a") as handle:  # and is killed in the middle of a row
        handle.write('c/3.jpg,c,c/3.jpg,"1.00 2')
    rows = read_manifest(tmp_path)
    assert [r["source"] for r in rows] == ["a/1.jpg", "b/2.jpg"]  # sorted, the cut-off row dropped
    assert rows[1]["status"] == "fallback_center"  # the later row wins
    assert parse_numbers(rows[0]["box"]) == [10.0, 20.0, 110.0, 140.0]
    assert parse_numbers(rows[0]["landmarks"])[:2] == [40.0, 60.0] and rows[0]["score"] == "0.9877"
    assert read_manifest(tmp_path / "nothing-here") == []


def test_remove_outputs_deletes_only_the_listed_crops(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"crop")
    (tmp_path / "a" / "notes.txt").write_text("mine")
    rows = [manifest_row("a/1.jpg", "a", "detected", "a/1.jpg"), manifest_row("a/2.jpg", "a", "failed: empty file")]
    write_manifest(tmp_path, rows)
    assert remove_outputs(tmp_path, read_manifest(tmp_path)) == 1
    assert not (tmp_path / "a" / "1.jpg").exists() and not (tmp_path / MANIFEST_NAME).exists()
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine"
