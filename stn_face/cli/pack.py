"""``stn-face-pack``: insightface's packed formats from prepared faces.

Examples::

    stn-face-pack rec .cache/prepared/celeba-subset-crop128 packs/celeba    # train.rec, train.idx, property
    stn-face-pack bin $STN_FACE_DATA/lfw/pairs.txt LFW_CROPS packs/lfw.bin  # a verification .bin
    stn-face-pack index packs/celeba/train.rec                              # rebuild train.idx from the .rec

``rec`` packs a ``<identity>/<image>`` folder (the output of ``stn-face-prepare``) for ``data=rec
data.path=DIR``; ``bin`` packs the pairs of an LFW-style pair file with the images under an image root
for ``eval=bin eval.path=FILE``. The images' own bytes are stored (no re-encoding). See
:mod:`stn_face.data.recordio` and :mod:`stn_face.data.bin_sets` for the layouts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stn_face.cli.entry import argparse_command, run_module
from stn_face.errors import MissingInputError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stn-face-pack", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("rec", help="a prepared <identity>/<image> folder -> train.rec, train.idx, property")
    rec.add_argument("input", type=Path, help="prepared crops laid out as <identity>/<image>")
    rec.add_argument("output", type=Path, help="folder to write train.rec, train.idx, property, identities.txt into")
    rec.add_argument("--min-images", type=int, default=1, help="leave out identities with fewer images")
    rec.add_argument("--max-identities", type=int, default=None, help="keep the first N identities (by name)")
    rec.add_argument("--max-images-per-identity", type=int, default=None, help="keep each one's first N images")
    pairs = commands.add_parser("bin", help="an LFW-style pair file + image root -> a verification .bin")
    pairs.add_argument("pairs", type=Path, help="pairs.txt (View 2, 10 folds) or pairsDevTest.txt (View 1)")
    pairs.add_argument("image_root", type=Path, help="folder holding Name/Name_NNNN.jpg (e.g. prepared crops)")
    pairs.add_argument("output", type=Path, help="the .bin to write")
    pairs.add_argument("--max-pairs-per-fold", type=int, default=None,
                       help="keep the first N same and N different pairs of every fold")
    index = commands.add_parser("index", help="rebuild train.idx from a sequential scan of train.rec")
    index.add_argument("rec", type=Path, help="the train.rec (or the folder holding it)")
    return p


@argparse_command
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "rec":
        from stn_face.data.pack import pack_folders

        summary = pack_folders(args.input, args.output, args.min_images, args.max_identities,
                               args.max_images_per_identity)
        for path, reason in list(summary.skipped.items())[:5]:
            print(f"left out {path}: {reason}")
        print(f"wrote {args.output}/train.rec, train.idx, property, identities.txt: {summary.format()}")
    elif args.command == "bin":
        from stn_face.data.bin_sets import pack_pairs

        if not args.pairs.is_file():
            raise MissingInputError(f"pair file {args.pairs} does not exist; pass an LFW-style pairs.txt")
        path, count = pack_pairs(args.pairs, args.image_root, args.output, args.max_pairs_per_fold)
        print(f"wrote {path}: {count} pairs, {2 * count} images ({path.stat().st_size / 2**20:.1f} MiB)")
    else:
        from stn_face.data.recordio import REC_FILE, rebuild_index

        rec = args.rec / REC_FILE if args.rec.is_dir() else args.rec
        count = rebuild_index(rec)
        print(f"wrote {rec.with_suffix('.idx')}: {count} records")
    return 0


if __name__ == "__main__":
    run_module(main)
