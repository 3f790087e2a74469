"""Every reader survives hostile input: truncated, bit-flipped, empty, another format under the right name,
and headers claiming gigabytes give one input error naming the file (one ``error:`` line, exit 2), within
seconds and without allocating the claim; nothing already written is touched. Random corruptions of the
binary formats (.rec/.idx, .bin, .npz, .ckpt) are driven by hypothesis. Names read from files never lead
outside the folder they are joined to."""

from __future__ import annotations

import io
import os
import pickle
import resource
import shutil
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stn_face.checkpoint import safe_torch_load
from stn_face.data.bin_sets import read_bin, write_bin
from stn_face.data.datasets import RecordImageDataset
from stn_face.data.images import ImageReadError, decode_rgb, read_rgb
from stn_face.data.pack import pack_folders
from stn_face.data.prepare.manifest import (
    MANIFEST_NAME,
    crop_path_map,
    manifest_row,
    read_manifest,
    write_manifest,
)
from stn_face.data.protocols import read_lfw_pairs, read_ytf_splits
from stn_face.data.recordio import rebuild_index
from stn_face.errors import InputError
from stn_face.evaluation.scoring import load_embeddings
from stn_face.files import check_relative_path, contained_path
from tests.helpers import expect_input_error

GIB = 2**30
SECONDS = 5.0  # every refusal, however large the claim


# ------------------------------------------------------------------------------------------ helpers
def jpeg(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refused(read, path: Path, *args, name: Path | None = None) -> str:
    """``read(path, *args)`` must raise an input error naming ``name`` (default ``path``) in one line,
    within :data:`SECONDS` and without growing the process by a gigabyte."""
    before, start = max_rss_mib(), time.perf_counter()
    with pytest.raises(InputError) as error:
        read(path, *args)
    assert time.perf_counter() - start < SECONDS
    assert max_rss_mib() - before < 1024, "allocated what the header claims"
    message = str(error.value)
    assert "\n" not in message and str(name or path) in message, message
    return message


def corrupt(data: bytes, draw) -> bytes:
    """One random corruption of ``data``: cut, flipped bits, an overwritten span, inserted bytes or a
    huge little-endian number written over four or eight bytes (a length claiming gigabytes)."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "claim"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, max(n - 1, 0)))]
    buffer = bytearray(data)
    if kind == "flip":
        for position in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            buffer[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(buffer)
    at = draw(st.integers(0, max(n - 1, 0)))
    if kind == "overwrite":
        junk = draw(st.binary(min_size=1, max_size=64))
        buffer[at:at + len(junk)] = junk
        return bytes(buffer[:n])
    if kind == "insert":
        return bytes(buffer[:at]) + draw(st.binary(min_size=1, max_size=64)) + bytes(buffer[at:])
    width = draw(st.sampled_from([4, 8]))
    value = draw(st.sampled_from([2**31 - 1, 2**32 - 1, 2**40, 2**62])) % (1 << (8 * width))
    buffer[at:at + width] = value.to_bytes(width, "little")
    return bytes(buffer[:n])


# Random corruptions locally (new cases every run); in CI the same fixed sequence, so a red CI is
# reproducible and a landing does not depend on the draw (a failure found locally is then fixed and kept).
FUZZ = settings(max_examples=200, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def survives(read, path: Path, name: Path | None = None) -> None:
    """A corrupted file is read whole or refused with one input error naming it; nothing else."""
    start = time.perf_counter()
    try:
        read(path)
    except InputError as error:
        message = str(error)
        assert "\n" not in message and str(name or path) in message, message
    assert time.perf_counter() - start < SECONDS


# ------------------------------------------------------------------------------------ .rec / .idx
@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> Path:
    """A real pack of 3 identities x 3 generated JPEG faces (stn-face-pack rec's code)."""
    root = tmp_path_factory.mktemp("crops")
    for person in range(3):
        (root / f"person_{person}").mkdir()
        for image in range(3):
            (root / f"person_{person}" / f"{image}.jpg").write_bytes(jpeg(10 * person + image))
    out = tmp_path_factory.mktemp("pack") / "pack"
    pack_folders(root, out)
    return out


def read_pack(directory: Path) -> int:
    """Open a pack as training does and read every image record."""
    dataset = RecordImageDataset(directory, lambda image: {"image": image}, check_records=-1)
    return sum(dataset.read(i)[1] >= 0 for i in range(len(dataset)))


def _copy(pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(pack, target)
    return target


def test_rec_and_idx_hostile_cases_are_one_error(small_pack, tmp_path):
    assert read_pack(small_pack) == 9
    rec_bytes = (small_pack / "train.rec").read_bytes()
    cases = {
        "train.rec": {"empty": b"", "truncated": rec_bytes[: len(rec_bytes) // 2],
                      "bit-flipped magic": bytes([rec_bytes[0] ^ 0xFF]) + rec_bytes[1:],
                      "a JPEG": jpeg(1), "length claims 512 MB": rec_bytes[:4] + struct.pack("<I", (1 << 29) - 1)
                      + rec_bytes[8:]},
        "train.idx": {"empty": b"", "a JPEG": jpeg(2), "negative offset": b"0\t-8\n1\t40\n",
                      "offset past the end": b"0\t0\n1\t99999999999\n", "not UTF-8": b"0\t0\n\xff\xfe\n"},
        "property": {"a JPEG": jpeg(3), "10^12 identities": b"1000000000000,112,112\n",
                     "gigantic image": b"3,4000000000,112\n", "empty": b""},
        "identities.txt": {"a JPEG": jpeg(4)},
    }
    for file, variants in cases.items():
        for label, content in variants.items():
            pack = _copy(small_pack, tmp_path)
            (pack / file).write_bytes(content)
            try:
                message = refused(read_pack, pack, name=pack)
            except BaseException:
                print(f"{file}: {label}")
                raise
            assert str(pack) in message, (file, label, message)
    # a header record announcing 2^31 image records
    pack = _copy(small_pack, tmp_path)
    from stn_face.data.recordio import pack as pack_record
    from stn_face.data.recordio import write_records

    payloads = [pack_record(0, b"", labels=np.array([2.0**31, 2.0**31 + 3]))]
    payloads += [pack_record(float(i % 3), jpeg(i), id1=i) for i in range(1, 4)]
    write_records(pack / "train.rec", payloads)
    assert "announces" in refused(read_pack, pack, name=pack)


def test_rebuilding_the_index_of_a_hostile_rec_is_one_error(small_pack, tmp_path, capsys):
    from stn_face.cli import pack as pack_cli

    pack = _copy(small_pack, tmp_path)
    data = (pack / "train.rec").read_bytes()
    (pack / "train.rec").write_bytes(data[:4] + struct.pack("<I", (1 << 29) - 1) + data[8:])  # record 0: 512 MB
    before = (pack / "train.idx").read_bytes()
    message = expect_input_error(capsys, pack_cli.main, ["index", str(pack / "train.rec")])
    assert str(pack / "train.rec") in message and message.count("\n") == 1
    assert (pack / "train.idx").read_bytes() == before  # the old index is not replaced by half of one


@FUZZ
@given(data=st.data())
def test_random_corruptions_of_a_pack(small_pack, tmp_path_factory, data):
    pack = _copy(small_pack, tmp_path_factory.mktemp("fuzz"))
    target = data.draw(st.sampled_from(["train.rec", "train.idx"]))
    (pack / target).write_bytes(corrupt((pack / target).read_bytes(), data.draw))
    survives(read_pack, pack, name=pack)
    survives(rebuild_index, pack / "train.rec")


# ----------------------------------------------------------------------------------------- .bin
@pytest.fixture(scope="module")
def small_bin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "tiny.bin"
    write_bin(path, [jpeg(i) for i in range(4)], [True, False])
    return path


def test_bin_hostile_cases_are_one_error(small_bin, tmp_path):
    images, flags, _ = read_bin(small_bin)
    assert len(images) == 4 and flags.tolist() == [True, False]
    data = small_bin.read_bytes()
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return subprocess.call, (["touch", str(marker)],)

    cases = {
        "empty": b"", "truncated": data[: len(data) // 2], "a JPEG": jpeg(1),
        "a zip": _zip_bytes(), "a payload": pickle.dumps(([b"x", b"y"], [Payload()])),
        "bytes claim 1 TiB": b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc",
        "memo claims 4 G entries": b"\x80\x04]r" + struct.pack("<I", 2**32 - 1) + b".",
        "list of ints": pickle.dumps([1, 2, 3]),
    }
    for label, content in cases.items():
        path = tmp_path / f"{label}.bin"
        path.write_bytes(content)
        try:
            refused(read_bin, path)
        except BaseException:
            print(label)
            raise
    assert not marker.exists()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_random_corruptions_of_a_bin(small_bin, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "lfw.bin"
    path.write_bytes(corrupt(small_bin.read_bytes(), data.draw))
    survives(read_bin, path)


# ----------------------------------------------------------------------------------------- .npz
@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "embeddings.npz"
    np.savez(path, names=np.asarray(["a/a_0001.jpg", "b/b_0001.jpg"]), embeddings=np.eye(2, 4, dtype=np.float32))
    return path


def _npz_with_header(shape: tuple[int, ...]) -> bytes:
    """An .npz whose `embeddings` header claims ``shape`` float64 but holds 16 bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        names = io.BytesIO()
        np.save(names, np.asarray(["a", "b"]))
        archive.writestr("names.npy", names.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
        archive.writestr("embeddings.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(16))
    return buffer.getvalue()


def _deflate_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        payload = io.BytesIO()
        np.save(payload, np.zeros((2, 2**23), dtype=np.float64))  # 128 MiB of zeros, ~130 KiB deflated
        archive.writestr("embeddings.npy", payload.getvalue())
        names = io.BytesIO()
        np.save(names, np.asarray(["a", "b"]))
        archive.writestr("names.npy", names.getvalue())
    return buffer.getvalue()


def test_npz_hostile_cases_are_one_error(small_npz, tmp_path):
    names, embeddings = load_embeddings(small_npz)
    assert names == ["a/a_0001.jpg", "b/b_0001.jpg"] and embeddings.shape == (2, 4)
    data = small_npz.read_bytes()
    objects = io.BytesIO()
    np.savez(objects, names=np.asarray(["a"], dtype=object), embeddings=np.zeros((1, 2)))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    cases = {"empty": b"", "truncated": data[: len(data) // 2], "bit-flipped": bytes(flipped), "a JPEG": jpeg(1),
             "a checkpoint": _checkpoint_bytes(), "header claims 8 GiB": _npz_with_header((2, 2**29)),
             "header claims 2^62 elements": _npz_with_header((2**31, 2**31)), "object arrays": objects.getvalue(),
             "compression bomb": _deflate_bomb()}
    for label, content in cases.items():
        path = tmp_path / f"{label}.npz"
        path.write_bytes(content)
        try:
            refused(load_embeddings, path)
        except BaseException:
            print(label)
            raise


def _checkpoint_bytes(legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(3), "b": torch.ones(2, 2)}, "step": 3}, buffer,
               _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_random_corruptions_of_an_npz(small_npz, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "embeddings.npz"
    path.write_bytes(corrupt(small_npz.read_bytes(), data.draw))
    survives(load_embeddings, path)


# ---------------------------------------------------------------------------------------- .ckpt
@FUZZ
@given(data=st.data())
def test_random_corruptions_of_a_checkpoint(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "last.ckpt"
    path.write_bytes(corrupt(_checkpoint_bytes(legacy=data.draw(st.booleans())), data.draw))  # zip or pre-1.6 format
    survives(safe_torch_load, path)


# ----------------------------------------------------------------------------------------- images
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header (IHDR) claiming ``width x height`` followed by almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_image_hostile_cases_are_one_error(tmp_path):
    good = jpeg(7, size=64)
    assert read_rgb(_write(tmp_path / "good.jpg", good)).shape == (64, 64, 3)
    flipped = bytearray(good)
    for position in range(20, len(good) - 2, 7):
        flipped[position] ^= 0x5A
    cases = {"empty": b"", "truncated": good[: len(good) // 3], "bit-flipped": bytes(flipped),
             "a checkpoint": _checkpoint_bytes(), "PNG claiming 60000x60000": _png_claiming(60_000, 60_000),
             "PNG claiming 2^31 wide": _png_claiming(2**31 - 1, 1)}
    for label, content in cases.items():
        path = _write(tmp_path / f"{label}.jpg", content)
        before, start = max_rss_mib(), time.perf_counter()
        try:
            read_rgb(path)
        except ImageReadError as error:
            assert "\n" not in str(error) and str(path) in str(error), (label, error)
        else:
            assert label == "bit-flipped", f"{label}: decoded"  # a flipped JPEG may still decode (other pixels)
        assert time.perf_counter() - start < SECONDS and max_rss_mib() - before < 1024, label
        with pytest.raises(ImageReadError) if label != "bit-flipped" else _maybe():
            decode_rgb(content, f"record of {label}")


class _maybe:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is not None and issubclass(kind, ImageReadError)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ pair and split files
LFW_PAIRS = "1\t1\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t1\tBob\t1\n"


def test_pair_and_split_files_hostile_cases_are_one_error(tmp_path):
    good = _write(tmp_path / "pairs.txt", LFW_PAIRS.encode())
    assert len(read_lfw_pairs(good)) == 2
    lfw_cases = {
        "empty": b"", "truncated": LFW_PAIRS.encode()[:30], "a JPEG": jpeg(1),
        "bit-flipped": LFW_PAIRS.encode().replace(b"\t1\t2", b"\t1\t\xb2"),
        "header claims 10^12 pairs": b"10\t100000000000\nAaron_Peirsol\t1\t2\n",
        "name leaves the root": b"1\t1\n..\t1\t2\nAaron_Peirsol\t1\tBob\t1\n",
        "name with a slash": b"1\t1\n../../etc\t1\t2\nAaron_Peirsol\t1\tBob\t1\n",
        "NUL byte": b"1\t1\nAaron\x00\t1\t2\nAaron_Peirsol\t1\tBob\t1\n",
    }
    for label, content in lfw_cases.items():
        path = _write(tmp_path / f"{label}.txt", content)
        try:
            refused(read_lfw_pairs, path)
        except BaseException:
            print(label)
            raise
    ytf_cases = {"empty": b"", "a JPEG": jpeg(2), "video leaves the root": b"1,1,../x,A/1,1\n",
                 "absolute video": b"1,1,/etc/1,A/1,1\n", "dot-dot video": b"1,1,A/..,A/1,1\n"}
    for label, content in ytf_cases.items():
        refused(read_ytf_splits, _write(tmp_path / f"ytf {label}.txt", content))


# -------------------------------------------------------------------------------------- manifests
def test_manifest_hostile_cases_are_one_error_and_touch_nothing(tmp_path):
    out = tmp_path / "prepared"
    (out / "a").mkdir(parents=True)
    (out / "a" / "1.jpg").write_bytes(b"crop")
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    write_manifest(out, [manifest_row("a/1.jpg", "a", "detected", "a/1.jpg")])
    assert list(crop_path_map(out)) == ["a/1.jpg"]
    header = "source,identity,output,box,landmarks,score,status\n"
    cases = {
        "a JPEG": jpeg(1), "another CSV": b"name,value\nx,1\n",
        "output leaves the folder": (header + "a/2.jpg,a,../precious.txt,,,,detected\n").encode(),
        "absolute output": (header + f"a/2.jpg,a,{outside},,,,detected\n").encode(),
        "NUL in output": (header + "a/2.jpg,a,a/2\x00.jpg,,,,detected\n").encode(),
        "source leaves the input": (header + "../../x.jpg,a,a/x.jpg,,,,detected\n").encode(),
        "damaged in the middle": (header + 'a/1.jpg,a,"a/1.jpg' + "x" * 200_000 + '\n' + "a/2.jpg,a,a/2.jpg,,,,detected\n"
                                  ).encode(),
    }
    for label, content in cases.items():
        (out / MANIFEST_NAME).write_bytes(content)
        try:
            refused(read_manifest, out, name=out / MANIFEST_NAME)
        except BaseException:
            print(label)
            raise
        assert (out / MANIFEST_NAME).read_bytes() == content  # left as it was
    assert outside.read_text() == "mine" and (out / "a" / "1.jpg").read_bytes() == b"crop"
    # what a killed run leaves (a cut-off last line) still reads
    (out / MANIFEST_NAME).write_text(header + "a/1.jpg,a,a/1.jpg,,,,detected\na/2.jpg,a,a/2")
    assert [row["source"] for row in read_manifest(out)] == ["a/1.jpg"]


def test_prepare_stops_on_a_hostile_manifest_before_writing(tmp_path):
    from stn_face.data.prepare import prepare_collection

    source = tmp_path / "raw" / "a"
    source.mkdir(parents=True)
    (source / "1.jpg").write_bytes(jpeg(5, size=64))
    out = tmp_path / "prepared"
    out.mkdir()
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"someone else's file")
    hostile = (b"source,identity,output,box,landmarks,score,status\n"
               b"a/1.jpg,a,../victim.jpg,,,,failed: x\n")
    (out / MANIFEST_NAME).write_bytes(hostile)
    with pytest.raises(InputError, match="manifest"):
        prepare_collection(tmp_path / "raw", out, workers=1, progress=False)
    assert victim.read_bytes() == b"someone else's file" and (out / MANIFEST_NAME).read_bytes() == hostile


# ------------------------------------------------------------------------------------ path escapes
@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "a\x00b", "", "C:\\evil", "\\\\host\\x",
                                  "a/\nb"])
def test_names_from_files_never_leave_their_folder(name, tmp_path):
    with pytest.raises(InputError):
        check_relative_path(name)
    with pytest.raises(InputError):
        contained_path(tmp_path, name)


def test_contained_path_follows_symlinks_out(tmp_path):
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path, tmp_path / "out" / "link")
    assert contained_path(tmp_path / "out", "a/b.jpg") == tmp_path / "out" / "a" / "b.jpg"
    with pytest.raises(InputError, match="outside"):
        contained_path(tmp_path / "out", "link/x.jpg")


def test_pack_bin_with_an_escaping_pair_file_writes_nothing(tmp_path, capsys):
    from stn_face.cli import pack as pack_cli

    root = tmp_path / "images" / "A"
    root.mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "secret_0001.jpg").write_bytes(jpeg(1))
    pairs = _write(tmp_path / "pairs.txt", b"1\t1\n../secret\t1\t1\nA\t1\tB\t1\n")
    output = tmp_path / "out.bin"
    message = expect_input_error(capsys, pack_cli.main, ["bin", str(pairs), str(tmp_path / "images"), str(output)])
    assert str(pairs) in message and "unsafe" in message
    assert not output.exists()


def test_export_of_a_rec_writes_only_below_the_output(small_pack, tmp_path):
    from stn_face.data.recordio import export_to_folders

    out = tmp_path / "faces"
    assert export_to_folders(small_pack, out) == 9
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written)


# ---------------------------------------------------------------------------- dlib .dat (backbone.weights)
@pytest.fixture(scope="module")
def dlib_dat() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is not installed (pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "dlib_face_recognition_resnet_model_v1.dat"


def load_dat(path: Path):
    from stn_face.nn import DlibResNet
    from stn_face.nn.pretrained import load_pretrained

    return load_pretrained(DlibResNet(weights=str(path)))


def test_dlib_dat_hostile_cases_are_one_error(dlib_dat, tmp_path):
    data = dlib_dat.read_bytes()
    claim = bytearray(data)
    claim[40:48] = (2**62).to_bytes(8, "little")
    cases = {"empty": b"", "truncated": data[: len(data) // 2], "cut after the header": data[:64],
             "a JPEG": jpeg(1), "a checkpoint": _checkpoint_bytes(), "a claim in the header": bytes(claim),
             "trailing junk": data + b"\x00" * 16}
    for label, content in cases.items():
        path = _write(tmp_path / f"{label.replace(' ', '_')}.dat", content)
        try:
            refused(load_dat, path)
        except BaseException:
            print(label)
            raise


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_random_corruptions_of_a_dlib_dat(dlib_dat, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "dlib.dat"
    raw = dlib_dat.read_bytes()
    head = data.draw(st.integers(0, 4096))  # the layer descriptions and tensor headers sit between the weights
    path.write_bytes(corrupt(raw[: 4096 + head], data.draw) + raw[4096 + head:])
    survives(load_dat, path)
