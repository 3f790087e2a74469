"""``stn-face-data [lfw] [--target DIR]``: download LFW (images, pair and people files) with checksum checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stn_face.cli.entry import argparse_command, run_module
from stn_face.data import download
from stn_face.data.download import LFW_BASE_URL, OTHER_DATASETS, DownloadError, download_lfw


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stn-face-data",
        description="Download LFW (deep-funneled images, pair and people files) with checksum checks.",
        epilog="Overrides may also be written Hydra-style: target=DIR base_url=URL.")
    parser.add_argument("dataset", nargs="?", default="lfw", choices=["lfw"], help="what to download (lfw)")
    parser.add_argument("--target", help="data root (default: $STN_FACE_DATA or ~/.cache/stn_face/data)")
    parser.add_argument("--mirror", "--base-url", dest="base_url", default=None,
                        help=f"base URL serving the LFW files (default {LFW_BASE_URL})")
    parser.add_argument("--keep-archives", action="store_true", help="keep the .tgz after unpacking")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = {}
    rest = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and key in ("target", "base_url", "mirror"):
            overrides["base_url" if key == "mirror" else key] = value
        else:
            rest.append(arg)
    args = parser.parse_args(rest)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@argparse_command
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``stn-face-data``; returns the exit code (0 ok, 1 download problem)."""
    args = _parse(argv)
    try:
        # download.LFW_FILES is looked up at call time: the tests serve their own table
        folder = download_lfw(args.target, args.base_url or LFW_BASE_URL, files=download.LFW_FILES,
                              keep_archives=args.keep_archives,
                              progress=not args.no_progress, timeout=args.timeout)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume the download", file=sys.stderr)
        return 130
    images = folder / "lfw-deepfunneled"
    count = sum(1 for _ in images.glob("*/*.jpg")) if images.is_dir() else 0
    print(f"LFW ready in {folder} ({count} images); use it with: export STN_FACE_DATA={folder.parent}")
    print(OTHER_DATASETS)
    return 0




if __name__ == "__main__":
    run_module(main)
