"""The CPU study's page is generated: the committed README.md is what assemble_readme.py makes of the
committed words and tables (an edit by hand, or tables rebuilt without the page, fails here)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import load_script

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "cpu_celeba"


def _assemble():
    return load_script(STUDY / "assemble_readme.py", "assemble_readme")


def test_committed_study_page_is_the_assembled_one():
    assert (STUDY / "README.md").read_text() == _assemble().readme(), (
        "experiments/cpu_celeba/README.md differs from its parts: edit readme/*.md, then run "
        "python experiments/cpu_celeba/assemble_readme.py")


def test_timing_table_lists_each_row_once_in_seed_order(tmp_path):
    tsv = tmp_path / "times.tsv"
    tsv.write_text("a/x\t42\t600\t2026-01-01\tEPYC\t1.97 2.00 2.01\tcmd\n"
                   "a/x\t43\t661\t2026-01-01\tEPYC\t2.10 2.00 2.01\tcmd\n"
                   "b/y\t42\t59\t2026-01-01\tEPYC\t0.50 1.00 1.01\tcmd\n")
    lines = _assemble().timing_table(tsv).splitlines()
    assert lines[2:] == ["| `a/x` | 42, 43 | 10:00 / 11:01 | 1.97 / 2.10 |", "| `b/y` | 42 | 0:59 | 0.50 |"]


def test_main_table_has_every_row_of_the_study():
    table = _assemble().main_table().splitlines()
    rows = {line.split("`")[1] for line in table[2:]}
    assert {"clean/identity", "clean/tps", "misaligned/projective", "clean/landmarks"} <= rows
    misaligned_projective = next(line for line in table if "`misaligned/projective`" in line)
    assert "**distinguishable**" in misaligned_projective
