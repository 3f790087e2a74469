"""insightface verification .bin files as VerificationSets, on real LFW images and the official pairs.txt."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from stn_face.data.bin_sets import (
    BinVerificationSet,
    consecutive_folds,
    pack_pairs,
    read_bin,
    write_bin,
)
from stn_face.data.eval_sets import VerificationSet
from tests.helpers import expect_input_error

pytestmark = pytest.mark.data


def _bin_set(path: Path, tmp_path: Path, **options) -> BinVerificationSet:
    return BinVerificationSet(name=None, protocol="bin", pairs_file=None, image_root=str(path),
                              prepared_root=str(tmp_path / "prepared"), path=str(path), **options)


@pytest.mark.parametrize("n_pairs", [6000, 300, 13, 7001])
def test_folds_are_insightface_kfold(n_pairs):
    from sklearn.model_selection import KFold

    expected = np.zeros(n_pairs, dtype=np.int64)
    for fold, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.arange(n_pairs))):
        expected[test] = fold
    assert np.array_equal(consecutive_folds(n_pairs, 10), expected)


def test_bin_of_view2_pairs_is_the_lfw_protocol(lfw_dir, tmp_path):
    """A .bin packed from pairs.txt: the same pairs, labels and 10 folds as eval=lfw, images byte for byte."""
    root = lfw_dir / "lfw-deepfunneled"
    path, count = pack_pairs(lfw_dir / "pairs.txt", root, tmp_path / "lfw.bin", max_pairs_per_fold=3)
    assert count == 60
    lfw = VerificationSet("lfw", "lfw", str(lfw_dir / "pairs.txt"), str(root), str(tmp_path / "unused"),
                          max_pairs_per_fold=3).load()
    packed = _bin_set(path, tmp_path).load()
    assert packed.name == "lfw" and packed.pairs_file == str(path)
    (_, labels, folds), (_, lfw_labels, lfw_folds) = packed.pair_indices(), lfw.pair_indices()
    assert np.array_equal(labels, lfw_labels) and np.array_equal(folds, lfw_folds)
    assert np.bincount(folds).tolist() == [6] * 10 and labels.sum() == 30
    packed.check_training_identities(["Aaron_Peirsol"])  # a .bin names no one: not checked, not refused
    assert packed.pairs_with_training_identities is None
    packed.prepare(None)
    packed.resolve()
    assert len(packed.items) == 2 * count
    for index, pair in enumerate(lfw.pairs):
        for side, name in enumerate((pair.left, pair.right)):
            assert packed.items[2 * index + side].read_bytes() == (root / name).read_bytes()
    # a limit per fold keeps the first pairs of each consecutive fold, like eval.max_pairs_per_fold
    fewer = _bin_set(path, tmp_path, max_pairs_per_fold=1).load()
    assert [(p.fold, p.same) for p in fewer.pairs] == [(f, s) for f in range(10) for s in (True, False)]


def test_reads_what_insightface_writes(lfw_dir, tmp_path):
    """insightface's own files: Python 2 str images (loaded with encoding='bytes') and numpy flags."""
    jpegs = [p.read_bytes() for p in sorted((lfw_dir / "lfw-deepfunneled" / "Colin_Powell").glob("*.jpg"))[:4]]
    with open(tmp_path / "py2.bin", "wb") as handle:  # protocol 2 pickles bytes through _codecs.encode
        pickle.dump((jpegs, np.array([True, False])), handle, protocol=2)
    images, issame, digest = read_bin(tmp_path / "py2.bin")
    assert images == jpegs and issame.tolist() == [True, False] and len(digest) == 12
    write_bin(tmp_path / "again.bin", images, issame)
    with open(tmp_path / "again.bin", "rb") as handle:
        assert pickle.load(handle, encoding="bytes") == (jpegs, [True, False])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_not_an_insightface_bin(lfw_dir, tmp_path, capsys):
    jpeg = (lfw_dir / "lfw-deepfunneled" / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    cases = {
        "photo.bin": jpeg,
        "dict.bin": pickle.dumps({"images": [jpeg, jpeg], "issame": [True]}),
        "odd.bin": pickle.dumps(([jpeg, jpeg, jpeg], [True, False])),
        "ints.bin": pickle.dumps(([1, 2], [True])),
        "code.bin": pickle.dumps(([_RunsCode(tmp_path / "ran")], [True])),
    }
    reasons = {"photo.bin": "cannot unpickle", "dict.bin": "holds a dict", "odd.bin": "3 images for 2 pairs",
               "ints.bin": "found int", "code.bin": "posix.mkdir"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        message = expect_input_error(capsys, _bin_set(tmp_path / name, tmp_path).load)
        assert str(tmp_path / name) in message and reasons[name] in message, message
        assert "is not an insightface verification .bin" in message and "stn-face-pack bin" in message
    assert not (tmp_path / "ran").exists()  # the foreign pickle ran nothing
    (tmp_path / "broken.bin").write_bytes(pickle.dumps(([jpeg, jpeg[:200], jpeg, jpeg], [True, False])))
    damaged = _bin_set(tmp_path / "broken.bin", tmp_path, n_folds=2).load()
    message = expect_input_error(capsys, damaged.prepare, None)
    assert "image 1 (pair 0) does not decode" in message and "damaged" in message
    message = expect_input_error(capsys, _bin_set(tmp_path / "absent.bin", tmp_path).load)
    assert "absent.bin does not exist" in message


def test_bin_dir_expands_to_one_named_set_per_file(lfw_dir, tmp_path, monkeypatch, capsys):
    from stn_face.training import eval_set_configs
    from tests.helpers import compose_train

    monkeypatch.setenv("STN_FACE_DATA", str(lfw_dir.parent))
    folder = tmp_path / "bins"
    for name, per_fold in (("lfw", 2), ("lfw_small", 1)):
        pack_pairs(lfw_dir / "pairs.txt", lfw_dir / "lfw-deepfunneled", folder / f"{name}.bin", per_fold)
    cfg = compose_train(["eval=bin", f"eval.bin_dir={folder}"], tmp_path)
    configs = eval_set_configs(cfg)
    assert [(c.name, Path(c.path).name) for c in configs] == [("lfw", "lfw.bin"), ("lfw_small", "lfw_small.bin")]
    from hydra.utils import instantiate

    assert [len(instantiate(c).load().pairs) for c in configs] == [40, 20]
    clash = compose_train(["eval=lfw", "+eval@extra_eval.bins=bin", f"extra_eval.bins.bin_dir={folder}"], tmp_path)
    assert "both named 'lfw'" in expect_input_error(capsys, eval_set_configs, clash)
    (tmp_path / "empty").mkdir()
    empty = compose_train(["eval=bin", f"eval.bin_dir={tmp_path / 'empty'}"], tmp_path)
    assert "holds no .bin file" in expect_input_error(capsys, eval_set_configs, empty)
    nothing = instantiate(compose_train(["eval=bin"], tmp_path).eval)
    assert "eval.path=FILE.bin" in expect_input_error(capsys, nothing.load)
