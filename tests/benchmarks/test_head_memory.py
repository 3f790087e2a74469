"""Section ``head_memory`` (benchmarks/head_memory.py): the formulas, and that a measured case holds exactly
the bytes they give (real heads, a real 2-process gloo group)."""

from __future__ import annotations

import pytest

from benchmarks import head_memory


def test_formulas_of_the_issue_cases():
    full = head_memory.computed("full", 2_000_000, 64)
    assert full["state_bytes"] == 3 * 2_000_000 * 512 * 4 and full["logit_bytes"] == 128 * 2_000_000 * 4
    partial = head_memory.computed("partial_fc@1", 2_000_000, 64)
    assert partial["rows"] == 31_250 and partial["state_bytes"] == 3 * 31_250 * 512 * 4
    # the global batch against the shard: as many logits as the full head's rank at rate 1, a tenth at 0.1
    assert partial["logit_bytes"] == 64 * 128 * 31_250 * 4 == full["logit_bytes"]
    sampled = head_memory.computed("partial_fc@0.1", 2_000_000, 64)
    assert sampled["state_bytes"] == partial["state_bytes"] and sampled["logit_columns"] == 3_125
    # a small shard: the batch's classes (about B per shard) are kept whatever the rate
    assert head_memory.computed("partial_fc@0.1", 10_000, 64)["logit_columns"] == 128
    # unequal shards: rank 0 holds the longest
    assert head_memory.computed("partial_fc@1", 1_000_003, 8)["rows"] == 125_001


@pytest.mark.slow
def test_a_measured_case_holds_the_computed_bytes():
    result = head_memory.bench_head_memory(measured=((1_000, 1), (1_000, 2)), identities=(1_000,),
                                           world_sizes=(1, 2), batch=8, steps=1)
    rows = {(r["world_size"], r["head"]): r for r in result["rows"]}
    for (world, head), row in rows.items():
        if world == 2 and head == "full":
            assert row["source"] == "computed"  # the full head's rank is the one-process case
            continue
        assert row["source"] == "measured" and row["formula_matches"], row
        assert row["step_seconds"] > 0 and row["step_peak_rss_bytes"] >= 0
    assert rows[(2, "partial_fc@1")]["measured_state_bytes"] * 2 == rows[(1, "partial_fc@1")]["measured_state_bytes"]
    text = head_memory.markdown(result)
    assert "| 1,000 | 2 | 5.86 MiB | 2.93 MiB* | 2.93 MiB* |" in text


@pytest.mark.slow
def test_stn_face_bench_runs_the_section(tmp_path):
    import json

    from benchmarks import cpu

    out = tmp_path / "bench.json"
    assert cpu.main(["--quick", "--sections", "head_memory", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["skipped"] == {}
    measured = [r for r in result["head_memory"]["rows"] if r["source"] == "measured"]
    assert {(r["identities"], r["world_size"], r["head"]) for r in measured} == {
        (1_000, 2, "partial_fc@1"), (1_000, 2, "partial_fc@0.1")}
    assert all(r["formula_matches"] for r in measured)
    assert "head partial_fc@0.1 C=1,000 W=2" in cpu.table(result)
