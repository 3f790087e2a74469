"""The studies' pages are generated: each committed README.md is what its assemble_readme.py makes of the
committed words and tables (an edit by hand, or tables rebuilt without the page, fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_script

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "cpu_celeba"


def _assemble():
    return load_script(STUDY / "assemble_readme.py", "assemble_readme")


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


# ------------------------------------------------------------------ the pretrained-alignment study
PRETRAINED = STUDY.parent / "pretrained_alignment"


def _pretrained():
    return load_script(PRETRAINED / "assemble_readme.py", "assemble_pretrained_readme")


@pytest.mark.parametrize("study,parts", [("cpu_celeba", "readme/*.md"), ("pretrained_alignment", "page.md")])
def test_committed_study_page_is_the_assembled_one(study, parts):
    folder = STUDY.parent / study
    page = load_script(folder / "assemble_readme.py", f"assemble_{study}_readme").readme()
    assert (folder / "README.md").read_text() == page, (
        f"experiments/{study}/README.md differs from its parts: edit {parts}, then run "
        f"python experiments/{study}/assemble_readme.py")


def test_goal_table_measures_the_gap_and_the_share_won_back(tmp_path):
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("row,transform,seeds,acc_mean\n"
                     "reference/dlib_5point,,None,98.45\nclean/identity,identity,None,96.35\n"
                     "clean/projective,projective,1 2 3,98.20\nclean/similarity,similarity,1 2 3,97.80\n"
                     "misaligned/identity,identity,None,80.35\nmisaligned/projective,projective,1 2 3,93.15\n")
    lines = _pretrained().goal_table(seeds).splitlines()
    assert "| `clean/projective` (seeds 1 2 3) | 98.20 | -0.25 | yes |" in lines
    assert "| `clean/similarity` (seeds 1 2 3) | 97.80 | -0.65 | no |" in lines
    assert "| `clean/tps` | not run yet | | |" in lines
    # lost 16.00 points from the start view, won back 12.80 of them: 80 %; 18.10 from the reference: 71 %
    assert "| `clean/identity` (96.35 %) | 16.00 | 12.80 | 80 % |" in lines
    assert "| `reference/dlib_5point` (98.45 %) | 18.10 | 12.80 | 71 % |" in lines


def test_a_slot_left_unfilled_is_named():
    from stn_face.evaluation.tables import fill_slots

    assert fill_slots("a {{X}} b", {"X": " 1 \n"}) == "a 1 b"
    with pytest.raises(ValueError, match=r"page.md has a slot with no value: '\{\{Y\}\}"):
        fill_slots("{{X}} {{Y}}", {"X": "1"}, source="page.md")
