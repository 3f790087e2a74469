"""``stn-face-data`` against a local HTTP server holding a real pair file and a tarball of real photos."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest

from stn_face.cli.data import main
from stn_face.data import download as dl
from stn_face.data.download import LFW_FILES, ChecksumError, DownloadError, RemoteFile, download_lfw

PEOPLE = ("Aaron_Peirsol", "Abel_Pacheco")


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (``bytes=N-``), as real servers offer; logs each request."""

    requests: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        type(self).requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        spec = self.headers.get("Range")
        if not spec or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start = int(spec.removeprefix("bytes=").split("-")[0])
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture()
def server(tmp_path, lfw_dir):
    """Serves a real pairs.txt and a small lfw-deepfunneled.tgz of real photos; yields (url, table)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pairs.txt").write_bytes((lfw_dir / "pairs.txt").read_bytes())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in PEOPLE:
            for image in sorted((lfw_dir / "lfw-deepfunneled" / name).glob("*.jpg"))[:2]:
                tar.add(image, arcname=f"lfw-deepfunneled/{name}/{image.name}")
    (site / "lfw-deepfunneled.tgz").write_bytes(buffer.getvalue())
    table = (
        replace(LFW_FILES[0], sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), md5=None),
        next(f for f in LFW_FILES if f.name == "pairs.txt"),  # the real checksums from the code's table
    )
    RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", table, site
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_checksum_table_matches_the_real_files(lfw_dir):
    for remote in LFW_FILES:
        local = lfw_dir / Path(remote.target).name
        if remote.extract:
            assert remote.md5 is not None  # the archive: published md5
            continue
        assert remote.sha256 is not None and remote.md5 is not None
        assert dl.file_digests(local) == (remote.sha256, remote.md5), remote.name


def test_existing_complete_lfw_needs_no_network(data_dir):
    """The real (read-only) data folder verifies against the table: nothing is fetched or written."""
    folder = download_lfw(data_dir, "http://127.0.0.1:9/unreachable/", progress=False)
    assert folder == data_dir / "lfw"


def test_download_verify_extract_and_resume(server, tmp_path):
    url, table, site = server
    target = tmp_path / "data"
    folder = download_lfw(target, url, files=table, progress=False)
    assert folder == target / "lfw"
    images = sorted(p.relative_to(folder).as_posix() for p in folder.glob("lfw-deepfunneled/*/*.jpg"))
    assert len(images) == 4 and images[0].startswith("lfw-deepfunneled/Aaron_Peirsol/")
    assert (folder / "pairs.txt").read_bytes() == (site / "pairs.txt").read_bytes()
    assert not (folder / "lfw-deepfunneled.tgz").exists()  # archives are removed after unpacking
    assert not list(folder.glob("*.part"))

    # a second run fetches nothing: files verify, the archive's marker says it is unpacked
    RangeHandler.requests = []
    download_lfw(target, url, files=table, progress=False)
    assert RangeHandler.requests == []

    # an interrupted download continues where it stopped (HTTP Range)
    (folder / "pairs.txt").unlink()
    whole = (site / "pairs.txt").read_bytes()
    (folder / "pairs.txt.part").write_bytes(whole[:1000])
    download_lfw(target, url, files=table, progress=False)
    assert RangeHandler.requests == [("/pairs.txt", "bytes=1000-")]
    assert (folder / "pairs.txt").read_bytes() == whole


def test_checksum_mismatch_is_an_error_and_leaves_no_file(server, tmp_path):
    url, table, site = server
    (site / "pairs.txt").write_bytes(b"10\t300\nnot the official file\n")
    target = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"pairs\.txt") as info:
        download_lfw(target, url, files=table[1:], progress=False)
    assert "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592" in str(info.value)
    assert not list((target / "lfw").glob("pairs.txt*"))


def test_unknown_checksum_warns_and_missing_file_is_a_clear_error(server, tmp_path, capsys):
    url, _, _ = server
    unverified = (RemoteFile("pairs.txt", "lfw/pairs.txt"),)
    download_lfw(tmp_path / "d", url, files=unverified, progress=False)
    assert "no checksum known for pairs.txt" in capsys.readouterr().err
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_lfw(tmp_path / "d", url, files=(RemoteFile("missing.txt", "lfw/missing.txt"),), progress=False)


def test_cli_entry_point(server, tmp_path, monkeypatch, capsys):
    url, table, site = server
    monkeypatch.setattr(dl, "LFW_FILES", table)
    assert main([f"target={tmp_path / 'data'}", f"base_url={url}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "LFW ready" in out and "4 images" in out and "CASIA-WebFace" in out and "YouTube Faces" in out
    assert (tmp_path / "data" / "lfw" / "pairs.txt").is_file()

    (site / "pairs.txt").write_bytes(b"tampered\n")
    (tmp_path / "data" / "lfw" / "pairs.txt").unlink()
    assert main(["--target", str(tmp_path / "data"), "--mirror", url, "--no-progress"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_default_target(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path / "mine"))
    assert dl.default_target() == tmp_path / "mine"
    monkeypatch.delenv("STN_FACE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert dl.default_target() == tmp_path / "cache" / "stn_face" / "data"
