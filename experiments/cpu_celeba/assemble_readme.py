"""Write experiments/cpu_celeba/README.md from the hand-written parts in readme/ and the generated files.

``readme/body.md`` is the page with ``{{NAME}}`` slots: HEAD, BOTTOM, STATIC, PICTURES and CONTENTION
are the files ``readme/<name>.md`` (the words); SEEDS and PAIRED are ``seeds.md`` and ``paired.md``
(written by ``stn-face-report``); TIMING is the table of wall times built from ``times.tsv``; DONE is
the number of finished runs under ``runs/``. ``collect.sh`` runs this last.

    python experiments/cpu_celeba/assemble_readme.py               # writes README.md
    python experiments/cpu_celeba/assemble_readme.py --main-table  # prints the results table of the top README
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from stn_face.evaluation.tables import fill_slots, timing_table

STUDY = Path(__file__).resolve().parent
WORDS = STUDY / "readme"


def readme() -> str:
    slots = {name.upper(): (WORDS / f"{name}.md").read_text()
             for name in ("head", "bottom", "static", "pictures", "contention")}
    slots["SEEDS"] = (STUDY / "seeds.md").read_text()
    slots["PAIRED"] = (STUDY / "paired.md").read_text()
    slots["TIMING"] = timing_table(STUDY / "times.tsv")
    slots["DONE"] = str(len(list((STUDY / "runs").glob("*/*/seed*/metrics.json"))))
    try:
        return fill_slots((WORDS / "body.md").read_text(), slots, source="readme/body.md")
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _mean_std(mean: str, std: str, digits: int) -> str:
    if not mean:
        return "-"
    return f"{float(mean):.{digits}f}" + (f" ± {float(std):.{digits}f}" if std else "")


def main_table() -> str:
    """The results table of the top-level README: each row's mean ± std across seeds and its paired
    difference from its reference row (the first comparison of the row in ``paired.csv``) with the
    verdict after the Holm adjustment."""
    first: dict[str, dict[str, str]] = {}
    for r in csv.DictReader((STUDY / "paired.csv").open()):
        first.setdefault(r["row"], r)
    lines = ["| row | seeds | LFW acc (%) | LFW AUC | TAR@FAR=1e-3 (%) | Δ acc vs reference (points) |",
             "|---|---|---|---|---|---|"]
    for r in csv.DictReader((STUDY / "seeds.csv").open()):
        n = len(r["seeds"].split())
        p = first.get(r["row"])
        delta = "-"
        if p and p.get("difference"):
            delta = (f"{100 * float(p['difference']):+.2f} [{100 * float(p['ci_seeds_pairs_low']):+.2f}, "
                     f"{100 * float(p['ci_seeds_pairs_high']):+.2f}]")
            if p["distinguishable_holm"] == "True":
                delta += " **distinguishable**"
            elif p["distinguishable"] == "True":
                delta += " (interval excludes 0; not after Holm)"
        seeds = r["seeds"].replace(" ", ", ") + ("" if n > 1 else " (1 seed)")
        lines.append(f"| `{r['row']}` | {seeds} | {_mean_std(r['acc_mean'], r['acc_std'], 2)} | "
                     f"{_mean_std(r['auc_mean'], r['auc_std'], 4)} | {_mean_std(r['tar_mean'], r['tar_std'], 1)} | "
                     f"{delta} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--main-table", action="store_true", help="print the top README's results table instead")
    args = parser.parse_args()
    if args.main_table:
        print(main_table())
        return
    (STUDY / "README.md").write_text(readme())
    print("wrote", STUDY / "README.md")


if __name__ == "__main__":
    main()
