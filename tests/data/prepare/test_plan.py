"""Planning: identity filters, identity lists and the input checks (real LFW photos)."""

from __future__ import annotations

import pytest

from stn_face.data.prepare import (
    CropSettings,
    PrepareError,
    crop_path_map,
    output_name,
    prepare_collection,
    read_identity_list,
    read_manifest,
)


def test_output_names_never_collide():
    assert output_name("p/a.jpg") == "p/a.jpg" and output_name("p/a.JPEG") == "p/a.JPEG"
    assert output_name("p/a.png") == "p/a.png.jpg" != output_name("p/a.jpg")


def test_identity_filters(lfw_dir, tmp_path):
    people = {"Abel_Pacheco": 4, "Akhmed_Zakayev": 3, "Aaron_Peirsol": 4, "Aaron_Sorkin": 2}
    files = [f"{name}/{name}_{i:04d}.jpg" for name, n in people.items() for i in range(1, n + 1)]
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# people to leave out\n1\nAaron_Peirsol\t4\n")
    assert read_identity_list(exclude) == {"Aaron_Peirsol"}
    out = tmp_path / "out"
    summary = prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=1, progress=False,
                                 min_images_per_identity=3, max_images_per_identity=3,
                                 exclude_identities=exclude)
    status = {r["source"]: r["status"] for r in read_manifest(out)}
    assert len(status) == len(files) == summary.total == 13
    assert status["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"] == "skipped: excluded identity"
    assert status["Aaron_Sorkin/Aaron_Sorkin_0001.jpg"].startswith("skipped: identity has 2 < min_images")
    assert status["Abel_Pacheco/Abel_Pacheco_0004.jpg"] == "skipped: beyond max_images_per_identity=3"
    kept = sorted(s for s, v in status.items() if not v.startswith("skipped"))
    assert kept == [f"{n}/{n}_{i:04d}.jpg" for n in ("Abel_Pacheco", "Akhmed_Zakayev") for i in (1, 2, 3)]
    assert summary.processed == 6 and summary.skipped == 7
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Abel_Pacheco", "Akhmed_Zakayev"]

    # filters are re-applied on every run and win: excluding a prepared identity removes its crops
    again = prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=1, progress=False,
                               min_images_per_identity=3, max_images_per_identity=3,
                               exclude_identities=["Aaron_Peirsol", "Akhmed_Zakayev"])
    assert again.processed == 0 and again.skipped == 10
    assert not list((out / "Akhmed_Zakayev").glob("*.jpg"))
    assert set(crop_path_map(out)) == {f"Abel_Pacheco/Abel_Pacheco_{i:04d}.jpg" for i in (1, 2, 3)}


def test_bad_inputs_raise_clear_errors(tmp_path, lfw_dir):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_collection(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no identity folders"):
        prepare_collection(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(PrepareError, match="inside the input"):
        prepare_collection(lfw_dir, lfw_dir / "crops", progress=False)
    with pytest.raises(PrepareError, match="multiple of 112"):
        prepare_collection(lfw_dir, tmp_path / "out", CropSettings(mode="landmarks", size=100), progress=False)
    with pytest.raises(PrepareError, match="relative"):
        prepare_collection(lfw_dir, tmp_path / "out", files=["../x.jpg"], progress=False)
    with pytest.raises(PrepareError, match="exclude_identities file"):
        prepare_collection(lfw_dir, tmp_path / "out", exclude_identities=tmp_path / "no-list.txt", progress=False)
