"""stn-face-embed on real LFW photos: raw photos with failures and root-level files."""

from __future__ import annotations

import numpy as np
import pytest

from stn_face.cli import embed
from tests.helpers import compose_cli

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]


@pytest.mark.slow
def test_embed_raw_photos_with_failures_and_root_level_files(checkpoints, photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "Aaron_Peirsol").mkdir(parents=True)
    for name in ("Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg"):
        (folder / "Aaron_Peirsol" / name).symlink_to(photos / "Aaron_Peirsol" / name)
    (folder / "loose.jpg").symlink_to(photos / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    (folder / "Aaron_Peirsol" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a whole jpeg")
    output = tmp_path / "out.npz"
    cfg = compose_cli("embed", [f"ckpt={checkpoints['similarity']}", f"input={folder}", f"output={output}",
                                f"cache_dir={tmp_path / 'cache'}", "workers=1", "progress=false"])
    embed.main(cfg)
    captured = capsys.readouterr()
    assert "warning: 1 of 4 images skipped" in captured.err and "Aaron_Peirsol/broken.jpg" in captured.err
    with np.load(output) as data:
        names, embeddings = data["names"].tolist(), data["embeddings"]
        assert data["failed"].tolist() == ["Aaron_Peirsol/broken.jpg"]
    assert names == ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "loose.jpg"]
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # the crops are the training crops: same as the cached LFW preparation of the same photo
    from stn_face.data.prepare import crop_path_map, prepare_collection
    from stn_face.embedder import FaceEmbedder
    from stn_face.paths import cache_dir

    reference_dir = cache_dir() / "prepared" / "lfw-crop128"  # cached; prepared here on a fresh checkout
    prepare_collection(photos, reference_dir, files=["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"], workers=1,
                       progress=False, replace_stale=True)
    prepared = crop_path_map(reference_dir)["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"]
    reference = FaceEmbedder.from_checkpoint(checkpoints["similarity"]).embed_files([prepared], progress=False)
    assert float(reference[0] @ embeddings[0]) > 0.9999

