"""insightface's packed training sets (train.rec / train.idx / property) written and read without mxnet,
on real CelebA-subset crops: the records, the dataset the FaceDataModule trains from, and bad input."""

from __future__ import annotations

import itertools
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stn_face.data.augment import train_transform
from stn_face.data.datasets import FaceImageDataset, RecordImageDataset, scan_identity_folders
from stn_face.data.recordio import (
    MAGIC,
    RecordFile,
    RecordIOError,
    export_to_folders,
    frame,
    iter_insightface_rec,
    open_packed,
    pack,
    rebuild_index,
    unframe,
    unpack,
    write_records,
)
from stn_face.data.sampling import ResumableShuffleSampler
from tests.helpers import expect_input_error
from tests.packed_helpers import CELEBA_IDENTITIES

pytestmark = pytest.mark.data


def _copy_pack(celeba_pack, tmp_path):
    target = tmp_path / "pack"
    shutil.copytree(celeba_pack, target)
    return target


def _offsets(pack_dir) -> dict[int, int]:
    return {int(k): int(v) for k, v in (line.split("\t") for line in (pack_dir / "train.idx").read_text().split("\n")
                                        if line)}


def test_pack_is_insightface_layout(celeba_crops, celeba_pack):
    samples, names = scan_identity_folders(celeba_crops, 1)
    packed = open_packed(celeba_pack, check_records=-1)
    n = len(samples)
    assert packed.num_classes == CELEBA_IDENTITIES == len(names) and packed.class_names == names
    assert packed.image_size == (128, 128)
    assert (celeba_pack / "property").read_text() == f"{CELEBA_IDENTITIES},128,128\n"
    # record 0: the header naming the image records 1..n and the identity records after them
    header = packed.records.read(0)
    assert header.flag == 2 and header.label.tolist() == [n + 1, n + 1 + CELEBA_IDENTITIES]
    assert packed.keys.tolist() == list(range(1, n + 1))
    for key, sample in zip(packed.keys.tolist(), samples):
        record = packed.records.read(key)
        assert record.payload == sample.path.read_bytes()  # the crop's own JPEG bytes
        assert record.identity == sample.label and record.id == key
    # identity records: each identity's range of image records, in label order
    ranges = [packed.records.read(n + 1 + label).label.tolist() for label in range(CELEBA_IDENTITIES)]
    assert ranges[0][0] == 1 and ranges[-1][1] == n + 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert [end - start for start, end in ranges] == [sum(s.label == i for s in samples) for i in range(len(names))]


def test_records_split_at_magic_words_as_dmlc_writes_them(celeba_crops, tmp_path):
    """A payload holding the magic word at an aligned position is written in parts (flags 1, 2, 3) and
    read back whole, the magic re-inserted, as dmlc-core's RecordIOReader does."""
    jpeg = sorted(celeba_crops.rglob("*.jpg"))[0].read_bytes()
    magic = struct.pack("<I", MAGIC)
    payload = jpeg[:400] + magic + jpeg[400:800] + magic + jpeg[800:]
    framed = frame(payload)
    flags = []
    position = 0
    while position < len(framed) - 3:
        word, lrecord = struct.unpack_from("<II", framed, position)
        if word != MAGIC:
            break
        flags.append(lrecord >> 29)
        position += 8 + (lrecord & ((1 << 29) - 1))
    assert flags == [1, 2, 3] and len(framed) % 4 == 0
    assert unframe(framed) == (payload, len(framed))
    write_records(tmp_path / "x.rec", [pack(3.0, payload), pack(4.0, jpeg)])
    with RecordFile(tmp_path / "x.rec") as records:
        assert records.read(0).payload == payload and records.read(0).identity == 3.0
        assert records.read(1).payload == jpeg


def test_unpack_multi_label_header():
    record = unpack(pack(0, b"xyz", labels=np.array([3.0, 7.0])))
    assert record.flag == 2 and list(record.label) == [3.0, 7.0] and record.payload == b"xyz"
    assert record.identity == 3.0


def test_rec_dataset_yields_the_folder_items(celeba_crops, celeba_pack):
    """Same (index, seed) -> the same augmented tensor and label as data=folder, for every item."""
    transform = train_transform(112, hflip=0.5, rotate_limit=8, shift_px=4)
    samples, _ = scan_identity_folders(celeba_crops, 1)
    folder = FaceImageDataset([s.path for s in samples], [s.label for s in samples], transform)
    packed = RecordImageDataset(celeba_pack, transform)
    assert len(packed) == len(folder) > 100
    for index in range(len(folder)):
        (a, label_a), (b, label_b) = folder[(index, 7 * index + 1)], packed[(index, 7 * index + 1)]
        assert label_a == label_b and torch.equal(a, b), index


def test_workers_read_through_their_own_handles_with_the_ddp_shard(celeba_crops, celeba_pack):
    """Rank 1 of 2 through a 2-worker DataLoader: the .rec batches equal the folder's (sampler, seeds and
    sharding are shared); the pickled dataset carries no file handle."""
    transform = train_transform(112, hflip=0.5)
    samples, _ = scan_identity_folders(celeba_crops, 1)
    folder = FaceImageDataset([s.path for s in samples], [s.label for s in samples], transform)
    packed = RecordImageDataset(celeba_pack, transform)
    packed[(0, 0)]  # opens this process's handle
    assert pickle.loads(pickle.dumps(packed)).packed.records._fd is None

    def batches(dataset, workers):
        sampler = ResumableShuffleSampler(len(dataset), 8, seed=3, rank=1, world_size=2)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, drop_last=True, num_workers=workers)
        return list(loader)[:4]

    for (a, la), (b, lb) in zip(batches(folder, 0), batches(packed, 2), strict=True):
        assert torch.equal(la, lb) and torch.equal(a, b)


def test_export_and_index_rebuild_round_trip(celeba_pack, tmp_path):
    pack_dir = _copy_pack(celeba_pack, tmp_path)
    original = (pack_dir / "train.idx").read_text()
    (pack_dir / "train.idx").unlink()
    assert rebuild_index(pack_dir / "train.rec") == len(original.splitlines())
    assert (pack_dir / "train.idx").read_text() == original
    count = export_to_folders(pack_dir, tmp_path / "faces")
    keys = [(key, payload) for key, _, payload in iter_insightface_rec(pack_dir)]
    assert count == len(keys) and len(list((tmp_path / "faces").glob("00000[0-5]"))) == CELEBA_IDENTITIES
    assert (tmp_path / "faces" / "000000" / f"{keys[0][0]:08d}.jpg").read_bytes() == keys[0][1]


# ------------------------------------------------------------------------------------------ bad input
def _rec_error(capsys, pack_dir) -> str:
    """The training data module's error for ``pack_dir``: one `error:` line, exit code 2."""
    from stn_face.data.datamodule import FaceDataModule

    return expect_input_error(capsys, FaceDataModule(source="rec", path=str(pack_dir), num_workers=0).setup, "fit")


def test_truncated_rec(celeba_pack, tmp_path, capsys):
    pack_dir = _copy_pack(celeba_pack, tmp_path)
    rec = pack_dir / "train.rec"
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) // 2])  # an interrupted copy
    message = _rec_error(capsys, pack_dir)
    assert str(rec) in message and "truncated" in message and "record" in message and "copy the .rec again" in message
    last_key, last_offset = max(_offsets(pack_dir).items(), key=lambda item: item[1])
    rec.write_bytes(data[: last_offset + 12])  # only the last record is cut
    message = _rec_error(capsys, pack_dir)
    assert f"record {last_key} (byte {last_offset})" in message and "truncated" in message and "copy" in message


def test_wrong_magic(celeba_pack, tmp_path, capsys):
    pack_dir = _copy_pack(celeba_pack, tmp_path)
    rec = pack_dir / "train.rec"
    data = bytearray(rec.read_bytes())
    offset = _offsets(pack_dir)[7]
    data[offset] ^= 0xFF
    rec.write_bytes(bytes(data))
    message = _rec_error(capsys, pack_dir)
    assert f"record 7 (byte {offset})" in message and "magic" in message and "stn-face-pack index" in message
    # the sequential scan names the damaged record too, and keeps the index as it was
    with pytest.raises(RecordIOError, match=f"record 7 \\(byte {offset}\\).*damaged"):
        rebuild_index(rec)


def test_idx_of_another_rec(celeba_pack, celeba_crops, tmp_path, capsys):
    from stn_face.data.pack import pack_folders

    other = tmp_path / "other"
    pack_folders(celeba_crops, other, max_images_per_identity=5)  # smaller records -> other offsets
    pack_dir = _copy_pack(celeba_pack, tmp_path)
    shutil.copy(other / "train.idx", pack_dir / "train.idx")
    message = _rec_error(capsys, pack_dir)
    assert "train.idx" in message and "does not match" in message and "stn-face-pack index" in message
    (pack_dir / "train.idx").write_text("0\t0\n1\tforty\n")
    message = _rec_error(capsys, pack_dir)
    assert "train.idx:2" in message and "key<TAB>offset" in message


def test_property_and_labels_that_do_not_match(celeba_pack, tmp_path, capsys):
    pack_dir = _copy_pack(celeba_pack, tmp_path)
    (pack_dir / "property").write_text("85742,112,112\n")
    message = _rec_error(capsys, pack_dir)
    assert "85742 identities" in message and f"{CELEBA_IDENTITIES} identity records" in message
    (pack_dir / "property").write_text("two,112,112\n")
    assert "<identities>,<height>,<width>" in _rec_error(capsys, pack_dir)
    # a header-less .rec whose labels exceed its property: found when the record is read, never trained on
    records = RecordFile(celeba_pack / "train.rec")
    payloads = [pack(records.read(k).identity + 10, records.read(k).payload) for k in (1, 2, 3)]
    (tmp_path / "bare").mkdir()
    write_records(tmp_path / "bare" / "train.rec", payloads)
    (tmp_path / "bare" / "property").write_text("3,128,128\n")
    dataset = RecordImageDataset(tmp_path / "bare", train_transform(112))
    with pytest.raises(RecordIOError, match="record 0 has label 10, outside the 3 identities"):
        dataset[0]


def test_a_record_whose_image_does_not_decode_is_replaced_like_a_broken_file(celeba_pack, tmp_path, caplog):
    """As with a broken JPEG in a folder: the next readable record is used, with one warning naming it."""
    with RecordFile(celeba_pack / "train.rec") as records:
        first, second = records.read(1), records.read(2)
    (tmp_path / "bad").mkdir()
    write_records(tmp_path / "bad" / "train.rec", [pack(0, first.payload[:300]), pack(1, second.payload)])
    (tmp_path / "bad" / "property").write_text("2,128,128\n")
    dataset = RecordImageDataset(tmp_path / "bad", train_transform(112, hflip=0.0))
    image, label = dataset[(0, 5)]
    assert label == 1 and torch.equal(image, dataset[(1, 5)][0])
    assert "record 0" in caplog.text and "skipping unreadable image" in caplog.text


def test_folder_selection_options_are_refused(celeba_pack, capsys):
    from stn_face.data.datamodule import FaceDataModule

    module = FaceDataModule(source="rec", path=str(celeba_pack), max_identities=5)
    assert "data.max_identities" in expect_input_error(capsys, module.setup, "fit")
    module = FaceDataModule(source="rec", path=None)
    assert "data.path=DIR" in expect_input_error(capsys, module.setup, "fit")
    missing = FaceDataModule(source="rec", path=str(celeba_pack / "nothing-here"))
    assert "train.rec" in expect_input_error(capsys, missing.setup, "fit")


def test_rec_config_starts_from_the_identity_view(celeba_pack, tmp_path):
    """data=rec: 112x112 aligned faces in, 112x112 out, so the learned transform starts as the identity."""
    from hydra.utils import instantiate

    from tests.helpers import compose_train

    cfg = compose_train(["data=rec", f"data.path={celeba_pack}", "transform=affine"], tmp_path)
    assert cfg.data.image_size == 112 and cfg.data.source == "rec"
    transformer = instantiate(cfg.transform).eval()
    assert transformer.init_scale == 1.0
    faces = torch.stack([RecordImageDataset(celeba_pack, train_transform(112, hflip=0.0))[i][0] for i in range(4)])
    with torch.no_grad():
        aligned, matrices = transformer(faces)
    assert torch.allclose(matrices, torch.eye(3).expand(4, 3, 3), atol=1e-6)
    assert (aligned - faces).abs().max() < 1e-4  # the untrained transformer passes the aligned face through
