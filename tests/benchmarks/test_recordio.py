"""benchmarks/recordio.py (the .rec read-throughput section) on real LFW crops, tiny sizes: keys and sane
numbers, no timing claims."""

from __future__ import annotations

import json

from benchmarks import recordio


def test_recordio_section_measures_both_sources(crops, tmp_path):
    out = tmp_path / "rec.json"
    assert recordio.main(["--crops", str(crops), "--images", "24", "--rounds", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["recordio"]
    assert result["images_per_round"] == 24 and result["rounds"] == 2 and result["image_size"] == 112
    assert result["pack"]["images"] == 60 and result["pack"]["identities"] == 10
    for name in ("folder", "rec", "folder_bytes", "rec_bytes"):
        assert len(result[name]["wall_s"]) == 2
        assert result[name]["images_per_s"] > 0 and result[name]["cpu_ms_per_image"] >= 0
    assert result["rec_over_folder_images_per_s"] > 0
    assert "data=rec (train.rec)" in recordio.table(result)
