"""Download LFW (deep-funneled images and the official pair/people files); the command is ``stn-face-data``.

Examples::

    stn-face-data                           # into $STN_FACE_DATA, else ~/.cache/stn_face/data
    stn-face-data --target data --mirror https://my.mirror/lfw/
    stn-face-data target=data base_url=https://my.mirror/lfw/

Every file is checked against the checksums in :data:`LFW_FILES` (sha256 where we know it, else the
md5 the LFW site and torchvision publish; an entry with neither is accepted with a warning).
Downloads go to ``<file>.part`` and resume with an HTTP Range request; a file already present with a
good checksum is not fetched again, and an unpacked archive leaves a marker so it is not unpacked
twice. The result has the layout the rest of stn_face expects: ``<target>/lfw/lfw-deepfunneled/...``
and ``<target>/lfw/pairs.txt`` etc.; point ``STN_FACE_DATA`` at ``<target>``.

CASIA-WebFace and YouTube Faces cannot be fetched automatically; ``stn-face-data`` prints where to
get them (see :data:`OTHER_DATASETS`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

LFW_BASE_URL = "https://vis-www.cs.umass.edu/lfw/"
USER_AGENT = "stn_face-downloader/0.1 (+https://github.com/)"
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: ``name`` relative to the base URL, ``target`` relative to the data
    root, and its checksums (None = unknown: not verified, a warning is printed)."""

    name: str
    target: str
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False  # a tar archive unpacked into the folder of ``target``
    unpacked: str | None = None  # the folder the archive creates, relative to the data root
    unpacked_files: int | None = None  # files in it when complete: an existing full copy is kept


# sha256 values were computed on the official files (byte-identical to the copies in
# $STN_FACE_DATA/lfw); md5 values are the ones torchvision's LFW dataset publishes for the same files.
# The deep-funneled archive (about 110 MB) is verified by its published md5 only.
LFW_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("lfw-deepfunneled.tgz", "lfw/lfw-deepfunneled.tgz", sha256=None,
               md5="68331da3eb755a505a502b5aacb3c201", extract=True,
               unpacked="lfw/lfw-deepfunneled", unpacked_files=13233),
    RemoteFile("pairs.txt", "lfw/pairs.txt",
               sha256="ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
               md5="9f1ba174e4e1c508ff7cdf10ac338a7d"),
    RemoteFile("pairsDevTrain.txt", "lfw/pairsDevTrain.txt",
               sha256="1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
               md5="4f27cbf15b2da4a85c1907eb4181ad21"),
    RemoteFile("pairsDevTest.txt", "lfw/pairsDevTest.txt",
               sha256="7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
               md5="5132f7440eb68cf58910c8a45a2ac10b"),
    RemoteFile("people.txt", "lfw/people.txt",
               sha256="bc8fa2b7f25c895cf7efb6de4f4fc27ca8b8d1cfa63350ad8b96eae2b198d365",
               md5="450f0863dd89e85e73936a6d71a3474b"),
    RemoteFile("peopleDevTrain.txt", "lfw/peopleDevTrain.txt",
               sha256="2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa",
               md5="54eaac34beb6d042ed3a7d883e247a21"),
    RemoteFile("peopleDevTest.txt", "lfw/peopleDevTest.txt",
               sha256="c3ed1f90499473401542101a56c14c1d82396bb8218c67a356d7460601047555",
               md5="e4bf5be0a43b5dcd9dc5ccfcb8fb19c5"),
    RemoteFile("lfw-names.txt", "lfw/lfw-names.txt",
               sha256="403cd39411ee297f99f69241959bd8f0496b44377711913a76ccdd8562874164",
               md5="a6d0a479bd074669f656265a6e693f6d"),
)

OTHER_DATASETS = """\
Not downloadable automatically:
  CASIA-WebFace (494,414 photos of 10,575 people; the paper's training set): distributed by its
    authors on request (Yi et al. 2014, "Learning Face Representation from Scratch"). Lay it out as
    <dir>/<identity>/<image>.jpg and run `stn-face-prepare input=<dir> output=<prepared>`, with
    exclude_identities=<lfw-names.txt> to leave out the people it shares with LFW.
  YouTube Faces (3,425 videos of 1,595 people, about 25 GB of frames): download after the request
    form at https://www.cs.tau.ac.il/~wolf/ytfaces/ ; put frame_images_DB/ and splits.txt in
    $STN_FACE_DATA/ytf/."""


class DownloadError(Exception):
    """A file could not be fetched or unpacked; the message names the URL or path and what to try."""


class ChecksumError(DownloadError):
    """A downloaded file does not match the checksum in the table."""


def default_target() -> Path:
    """``$STN_FACE_DATA`` when set, else ``$XDG_CACHE_HOME/stn_face/data`` (``~/.cache/...``)."""
    from stn_face.paths import DATA_ENV, default_data_dir

    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return default_data_dir()


def file_digests(path: str | os.PathLike) -> tuple[str, str]:
    """``(sha256, md5)`` hex digests of a file, read in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify(path: Path, remote: RemoteFile) -> bool:
    """True when ``path`` matches the known checksums (or none are known: warns); raises
    :class:`ChecksumError` on a mismatch."""
    if remote.sha256 is None and remote.md5 is None:
        print(f"warning: no checksum known for {remote.name}; {path} is not verified", file=sys.stderr)
        return True
    sha, md5 = file_digests(path)
    for kind, expected, actual in (("sha256", remote.sha256, sha), ("md5", remote.md5, md5)):
        if expected is not None and expected.lower() != actual:
            raise ChecksumError(f"checksum mismatch for {remote.name}: expected {kind} {expected}, got {actual} "
                                f"({path}); the source serves a different file: try another --mirror")
    return True


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part file is complete
            return
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}; check the URL or use "
                            "--mirror") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}; check the network connection or use "
                            "--mirror") from None
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        length = response.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length and length.isdigit() else None
        from tqdm.auto import tqdm

        with open(part, mode) as handle, tqdm(total=total, initial=have if resumed else 0, unit="B",
                                              unit_scale=True, desc=PurePosixPath(url).name,
                                              disable=not progress) as bar:
            try:
                while block := response.read(CHUNK):
                    handle.write(block)
                    bar.update(len(block))
            except OSError as err:
                raise DownloadError(f"download of {url} broke off ({err}); run the command again to "
                                    "resume") from None


def _safe_extract(archive: Path, destination: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
            return
        root = destination.resolve()
        for member in tar.getmembers():  # older Pythons: refuse paths leaving the destination
            target = (destination / member.name).resolve()
            if (root not in target.parents and target != root) or member.issym() or member.islnk():
                raise DownloadError(f"{archive} holds an unsafe member {member.name!r}; refusing to unpack")
        tar.extractall(destination)


def _complete_copy(root: Path, remote: RemoteFile) -> bool:
    """True when the archive's folder already holds the expected number of files (a copy the user
    unpacked before, or a read-only data folder)."""
    if not remote.unpacked or not remote.unpacked_files:
        return False
    folder = root / remote.unpacked
    if not folder.is_dir():
        return False
    count = sum(1 for _, _, names in os.walk(folder) for _ in names)
    return count == remote.unpacked_files


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.extracted")


def download_file(remote: RemoteFile, root: Path, base_url: str, *, keep_archives: bool = False,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch (or find) one file under ``root``, verify it, unpack it if it is an archive."""
    path = root / remote.target
    if remote.extract and (_marker(path).exists() or _complete_copy(root, remote)):
        return path.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        part = path.with_name(path.name + ".part")
        url = base_url.rstrip("/") + "/" + remote.name
        print(f"downloading {url}", file=sys.stderr, flush=True)
        _fetch(url, part, progress, timeout)
        try:
            verify(part, remote)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, path)
    else:
        try:
            verify(path, remote)
        except ChecksumError as err:
            raise ChecksumError(f"{err}; delete {path} to download it again") from None
    if remote.extract:
        print(f"unpacking {path.name} into {path.parent}", file=sys.stderr, flush=True)
        try:
            _safe_extract(path, path.parent)
        except (tarfile.TarError, OSError) as err:
            raise DownloadError(f"could not unpack {path}: {err}; delete it to download it again") from None
        _marker(path).write_text(remote.sha256 or remote.md5 or "", encoding="utf-8")
        if not keep_archives:
            path.unlink()
        return path.parent
    return path


def download_lfw(target: str | os.PathLike | None = None, base_url: str = LFW_BASE_URL, *,
                 files: Sequence[RemoteFile] = LFW_FILES, keep_archives: bool = False,
                 progress: bool = True, timeout: float = 60.0) -> Path:
    """Download and unpack LFW into ``<target>/lfw``; returns that folder. Resumable and idempotent."""
    root = Path(target).expanduser() if target else default_target()
    root.mkdir(parents=True, exist_ok=True)
    for remote in files:
        download_file(remote, root, base_url, keep_archives=keep_archives, progress=progress, timeout=timeout)
    return root / "lfw"
