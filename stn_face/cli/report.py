"""``stn-face-report DIR``: a Table-3-style table (``table.md``, ``table.csv``) and ``roc.png`` of the runs
below DIR (a Hydra multirun folder or any folder of run folders). Where runs differ only in ``seed``, also
``seeds.md``/``.csv`` (mean ± std across seeds), ``paired.md``/``.csv`` (each learned row against its
identity row, with bootstrap intervals; further pairs of rows with ``--compare ROW=REFERENCE``), and
``roc.png`` draws one curve per row (:mod:`stn_face.evaluation.study`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stn_face.cli.entry import argparse_command, run_module
from stn_face.errors import InputError


@argparse_command
def main(argv: Sequence[str] | None = None) -> int:
    from stn_face.evaluation.artifacts import METRICS_FILE
    from stn_face.evaluation.report import find_runs, table_rows, write_roc_figure, write_table

    parser = argparse.ArgumentParser(
        prog="stn-face-report",
        description="Collect metrics.json files under DIR into table.md, table.csv and roc.png.",
    )
    parser.add_argument("dir", type=Path, help="a Hydra multirun folder (or any folder) holding runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: DIR)")
    parser.add_argument("--published", type=Path, default=None,
                        help="folder of published LFW ROC files to draw too, e.g. $STN_FACE_DATA/lfw/published-roc")
    parser.add_argument("--far", default="1e-3", help="the TAR@FAR column, as a metrics key (default 1e-3)")
    parser.add_argument("--bootstrap", type=int, default=10_000,
                        help="bootstrap resamples of the paired comparisons (default 10000)")
    parser.add_argument("--compare", action="append", default=[], metavar="ROW=REFERENCE",
                        help="also compare ROW with REFERENCE (row labels as in seeds.md, e.g. "
                             "clean/landmarks=clean/identity); repeatable")
    args = parser.parse_args(argv)
    compare = [tuple(item.split("=", 1)) for item in args.compare]
    if any(len(pair) != 2 or not all(pair) for pair in compare):
        parser.error(f"--compare takes ROW=REFERENCE, two row labels (got {' '.join(args.compare)})")

    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    runs = find_runs(args.dir)
    if not runs:
        print(f"no {METRICS_FILE} found under {args.dir}", file=sys.stderr)
        return 1
    from stn_face.evaluation.study import check_labels, group_by_seed, write_study

    seed_rows = group_by_seed(runs, args.dir)
    try:  # before anything is written
        check_labels(seed_rows, compare)
    except KeyError as error:
        raise InputError(f"--compare {error.args[0]} (runs under {args.dir})") from None
    out = args.out or args.dir
    md_path, csv_path = write_table(table_rows(runs, args.dir, far=args.far), out, far=args.far)
    published = None
    if args.published is not None:
        if not args.published.is_dir():
            raise InputError(f"--published {args.published} is not a folder; pass the folder of published "
                             "ROC files, e.g. $STN_FACE_DATA/lfw/published-roc")
        from stn_face.evaluation.plots import load_published_rocs

        published = load_published_rocs(args.published)
    print(md_path.read_text())
    if compare or any(len(row.runs) > 1 for row in seed_rows):
        if args.bootstrap < 100:
            parser.error(f"--bootstrap {args.bootstrap} is too few resamples for a 95 % interval; use 1000 or more")
        written = write_study(seed_rows, out, far=args.far, published=published, n_boot=args.bootstrap,
                              compare=compare)
        for path in written:
            if path.suffix == ".md":
                print(path.read_text())
        print(f"wrote {md_path}, {csv_path}, " + ", ".join(str(p) for p in written))
        return 0
    roc_path = write_roc_figure(runs, Path(out) / "roc.png", args.dir, published=published)
    print(f"wrote {md_path}, {csv_path}" + (f", {roc_path}" if roc_path else " (no roc_lfw.npz found: no roc.png)"))
    return 0


if __name__ == "__main__":
    run_module(main)
