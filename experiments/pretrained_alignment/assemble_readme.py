"""Write experiments/pretrained_alignment/README.md from ``page.md`` (the words, with ``{{SLOT}}``s) and
the files ``collect.sh`` makes: SEEDS and PAIRED are ``seeds.md`` and ``paired.md`` (``stn-face-report``),
GOAL the issue's two goals computed from ``seeds.csv``, TIMING the wall times of ``times.tsv``, DONE the
finished runs under ``runs/``. ``collect.sh`` runs this last.

    python experiments/pretrained_alignment/assemble_readme.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from stn_face.evaluation.tables import fill_slots, timing_table

STUDY = Path(__file__).resolve().parent
REFERENCE, START, PLAIN = "reference/dlib_5point", "clean/identity", "clean/plain"
MISALIGNED_START, MISALIGNED_LEARNED = "misaligned/identity", "misaligned/projective"
LEARNED = ["clean/similarity", "clean/affine", "clean/projective", "clean/tps", "finetune/projective"]


def _accuracies(seeds_csv: Path) -> dict[str, tuple[float, str]]:
    """row -> (mean LFW accuracy in %, its seeds) from ``seeds.csv``."""
    with seeds_csv.open() as handle:
        return {r["row"]: (float(r["acc_mean"]), r["seeds"]) for r in csv.DictReader(handle) if r["acc_mean"]}


def goal_table(seeds_csv: Path) -> str:
    """The issue's goals: each learned row's distance to the landmark reference (goal: within 0.3 points or
    above it), and the share of the accuracy lost to misalignment that the learned projective transformer
    wins back (goal: at least 80 %), against two baselines of what "aligned" means."""
    acc = _accuracies(seeds_csv)
    ref = acc[REFERENCE][0]
    lines = ["| learned row (mean over its seeds) | LFW acc (%) | minus the landmark reference (points) | within 0.3 points or above |",
             "|---|---|---|---|"]
    for row in LEARNED:
        if row not in acc:
            lines.append(f"| `{row}` | not run yet | | |")
            continue
        gap = acc[row][0] - ref
        lines.append(f"| `{row}` (seeds {acc[row][1]}) | {acc[row][0]:.2f} | {gap:+.2f} | {'yes' if gap >= -0.3 else 'no'} |")
    lines += ["", "| misalignment: lost from ... to `misaligned/identity` | points lost | won back by `misaligned/projective` | share won back (goal 80 %) |",
              "|---|---|---|---|"]
    if MISALIGNED_START in acc and MISALIGNED_LEARNED in acc:
        start, learned = acc[MISALIGNED_START][0], acc[MISALIGNED_LEARNED][0]
        for baseline in (START, REFERENCE):
            lost = acc[baseline][0] - start
            lines.append(f"| `{baseline}` ({acc[baseline][0]:.2f} %) | {lost:.2f} | {learned - start:.2f} | "
                         f"{100 * (learned - start) / lost:.0f} % |")
    return "\n".join(lines)


def readme() -> str:
    slots = {"SEEDS": (STUDY / "seeds.md").read_text(), "PAIRED": (STUDY / "paired.md").read_text(),
             "GOAL": goal_table(STUDY / "seeds.csv"), "TIMING": timing_table(STUDY / "times.tsv"),
             "DONE": str(len(list((STUDY / "runs").rglob("metrics.json"))))}
    try:
        return fill_slots((STUDY / "page.md").read_text(), slots, source="page.md")
    except ValueError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    (STUDY / "README.md").write_text(readme())
    print(f"wrote {STUDY / 'README.md'}")
