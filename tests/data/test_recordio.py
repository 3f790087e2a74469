"""insightface packed formats (.rec/.idx, lfw.bin) read without mxnet, on real LFW images."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from stn_face.data.recordio import (
    RecordIOError,
    export_to_folders,
    iter_insightface_rec,
    pack,
    read_bin_pairs,
    unpack,
    write_records,
)


def _jpegs(lfw_dir, n=6):
    files = sorted((lfw_dir / "lfw-deepfunneled" / "George_W_Bush").glob("*.jpg"))[:n]
    return [f.read_bytes() for f in files]


def test_rec_roundtrip_with_insightface_header(lfw_dir, tmp_path):
    jpegs = _jpegs(lfw_dir)
    header = pack(0, b"", labels=np.array([len(jpegs) + 1, len(jpegs) + 1]))
    payloads = [header] + [pack(float(i % 2), data, id1=i + 1) for i, data in enumerate(jpegs)]
    write_records(tmp_path / "train.rec", payloads)
    records = list(iter_insightface_rec(tmp_path / "train.rec"))
    assert [key for key, _, _ in records] == list(range(1, 7))
    assert [label for _, label, _ in records] == [0, 1, 0, 1, 0, 1]
    reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpegs[2], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(records[2][2], reference) and reference.shape == (250, 250, 3)
    assert export_to_folders(tmp_path / "train.rec", tmp_path / "faces") == 6
    assert len(list((tmp_path / "faces" / "000001").glob("*.jpg"))) == 3


def test_unpack_multi_label_header():
    record = unpack(pack(0, b"xyz", labels=np.array([3.0, 7.0])))
    assert record.flag == 2 and list(record.label) == [3.0, 7.0] and record.payload == b"xyz"


def test_bad_magic_is_reported(tmp_path, lfw_dir):
    write_records(tmp_path / "x.rec", [pack(1.0, _jpegs(lfw_dir, 1)[0])])
    data = bytearray((tmp_path / "x.rec").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "x.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOError, match="bad magic"):
        list(iter_insightface_rec(tmp_path / "x.rec"))


def test_lfw_bin_pairs(lfw_dir, tmp_path):
    jpegs = _jpegs(lfw_dir, 4)
    with open(tmp_path / "lfw.bin", "wb") as handle:
        pickle.dump((jpegs, [True, False]), handle, protocol=pickle.HIGHEST_PROTOCOL)
    images, issame = read_bin_pairs(tmp_path / "lfw.bin")
    assert len(images) == 4 and issame.tolist() == [True, False]
    assert images[0].shape == (250, 250, 3) and images[0].dtype == np.uint8
    with open(tmp_path / "bad.bin", "wb") as handle:
        pickle.dump((jpegs[:3], [True, False]), handle)
    with pytest.raises(RecordIOError, match="expected twice"):
        read_bin_pairs(tmp_path / "bad.bin")
