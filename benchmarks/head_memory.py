"""Section ``head_memory`` of ``stn-face-bench``: the margin head's memory per rank, full head vs Partial FC.

For 10k, 100k, 1M and 2M identities at world sizes 1, 8 and 64, fp32, 512-d embeddings:

- ``state``: weights + SGD momentum + gradients of the class centres on one rank. The full head
  (``head=arcface``) is replicated, so every rank holds all ``C`` rows three times; Partial FC
  (``head=partial_fc``) holds its shard of ``ceil(C / W)`` rows. Its gradient is shard-sized whatever
  ``sample_rate`` (the step indexes the shard, as insightface's partial_fc_v2 does), so ``sample_rate``
  does not change the state; it shrinks the step's logits and their matmuls.
- ``logits``: one ``(N, K)`` fp32 logit matrix of a step, ``B = 128`` images a rank (arcface_torch's
  batch): ``N = B`` and ``K = C`` for the full head; ``N = W B`` (the gathered global batch) and
  ``K = max(int(sample_rate * rows), positives)`` for Partial FC (the batch's classes are always kept:
  about ``B`` of them fall in one rank's shard once ``C >> W B``). Autograd keeps a few of these
  (cosines, margin logits, softmax).

Cases small enough for this machine are **measured** (``source: measured``): each in fresh processes
(``W`` gloo processes for ``W > 1``), the real head (:class:`~stn_face.nn.heads.CombinedMarginHead` or
:class:`~stn_face.nn.partial_fc.PartialFCHead`) and ``torch.optim.SGD`` with momentum, timed steps
(forward, backward, optimiser step) on random embeddings and labels (values do not change memory or
time); ``state_bytes`` is summed over the live weight, gradient and momentum tensors, and the peak RSS
over the process's baseline (after one warm-up step) is read from ``/proc/self/status`` (``VmHWM``, reset
through ``/proc/self/clear_refs``), while building the head (``build_peak_rss_bytes``: Partial FC draws
the whole matrix before keeping its shard) and over the steps (``step_peak_rss_bytes``). The others are **computed** from the same
formulas, which the measured cases check (``formula_matches``). ``python -m benchmarks.head_memory``
prints the table alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from stn_face.nn.partial_fc import shard_range

IDENTITIES = (10_000, 100_000, 1_000_000, 2_000_000)
WORLD_SIZES = (1, 8, 64)
SAMPLE_RATES = (1.0, 0.1)
EMBEDDING = 512
BATCH_PER_RANK = 128
#: (identities, world size) measured here by default: the rest do not fit a 2-core, 24 GiB machine in
#: minutes (1M at W=1 is 6 GiB of head state and 128 x 1M logits; W=64 is 64 processes)
MEASURED = ((10_000, 1), (100_000, 1), (10_000, 8))
HEADS = ("full", *(f"partial_fc@{rate:g}" for rate in SAMPLE_RATES))


# ------------------------------------------------------------------------------------------- formulas
def computed(head: str, identities: int, world: int, embedding: int = EMBEDDING,
             batch: int = BATCH_PER_RANK) -> dict[str, Any]:
    """Bytes per rank of ``head`` (``full`` or ``partial_fc@<rate>``): state and one logit matrix."""
    if head == "full":
        rows, rows_in_step, batch_rows = identities, identities, batch
    else:
        rate = float(head.split("@", 1)[1])
        rows = shard_range(identities, 0, world)[1]  # rank 0 holds the longest shard
        positives = min(rows, batch)  # about B of the global batch's classes fall in one shard
        rows_in_step = rows if rate >= 1.0 else max(max(1, int(rate * rows)), positives)
        batch_rows = world * batch
    return {"rows": rows, "state_bytes": 3 * rows * embedding * 4, "logit_columns": rows_in_step,
            "logit_bytes": batch_rows * rows_in_step * 4}


# ------------------------------------------------------------------------------------------ measuring
def _status_bytes(key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last :func:`_reset_peak`) of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the lifetime peak


def _reset_peak() -> None:
    """Start a new peak-RSS window (Linux: ``5`` into ``/proc/self/clear_refs`` resets ``VmHWM``)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _measure_rank(rank: int, world: int, head: str, identities: int, embedding: int, batch: int, steps: int,
                  init_file: str, out: str) -> None:
    """One process (one rank): build the head, take ``steps`` optimiser steps, write what it measured."""
    import torch.distributed as dist

    from stn_face.nn.heads import CombinedMarginHead
    from stn_face.nn.partial_fc import PartialFCHead

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    generator = torch.Generator().manual_seed(rank)
    embeddings = torch.randn(batch, embedding, generator=generator, requires_grad=True)
    # one tiny step first, so the baseline holds torch's own first-use allocations (kernels, thread pools)
    warm = CombinedMarginHead(embedding, 16)
    warm.loss(embeddings, torch.zeros(batch, dtype=torch.long))[0].backward()
    torch.optim.SGD(warm.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4).step()
    embeddings.grad = None
    del warm
    _reset_peak()
    baseline = _status_bytes("VmRSS")
    torch.manual_seed(0)
    if head == "full":
        module = CombinedMarginHead(embedding, identities)
    else:
        module = PartialFCHead(embedding, identities, sample_rate=float(head.split("@", 1)[1]))
    after_build = _status_bytes("VmHWM")
    _reset_peak()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    wall, cpu = [], []
    for step in range(steps + 1):  # the first step allocates gradients and momentum: untimed
        labels = torch.randint(0, identities, (batch,), generator=generator)
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=False)
        loss, _ = module.loss(embeddings, labels, step=step)
        loss.backward()
        optimizer.step()
        if step:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    tensors = [p for p in module.parameters()] + [p.grad for p in module.parameters()]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    record = {"rank": rank, "rows": module.weight.shape[0],
              "state_bytes": sum(t.numel() * t.element_size() for t in tensors),
              "build_peak_rss_bytes": after_build - baseline, "step_peak_rss_bytes": _status_bytes("VmHWM") - baseline,
              "step_seconds": statistics.median(wall), "step_cpu_seconds": statistics.median(cpu)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    if world > 1:
        dist.destroy_process_group()


def measure(head: str, identities: int, world: int, embedding: int = EMBEDDING, batch: int = BATCH_PER_RANK,
            steps: int = 2) -> dict[str, Any]:
    """Run one case in ``world`` fresh processes; rank 0's figures (it holds the longest shard)."""
    import torch.multiprocessing as mp

    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(prefix="head-memory-") as tmp:
            try:
                mp.spawn(_measure_rank, args=(world, head, identities, embedding, batch, steps, f"{tmp}/init", tmp),
                         nprocs=world, join=True)
            except mp.ProcessExitedException:
                # gloo sometimes aborts a process while tearing down ("terminate called without an active
                # exception", seen once in CI on 2 CPU processes): the figures stand if every rank wrote them
                if not all(Path(tmp, f"rank{r}.json").exists() for r in range(world)):
                    if attempt == 2:
                        raise
                    continue
            return json.loads(Path(tmp, "rank0.json").read_text())
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- table
def bench_head_memory(measured: Sequence[tuple[int, int]] = MEASURED, identities: Sequence[int] = IDENTITIES,
                      world_sizes: Sequence[int] = WORLD_SIZES, embedding: int = EMBEDDING,
                      batch: int = BATCH_PER_RANK, steps: int = 2, seconds_left=None) -> dict[str, Any]:
    """Every (identities, world size, head) row: computed figures, and measured ones for ``measured`` cases
    (Partial FC only at ``W > 1``: the full head's rank is the same as at ``W = 1``). ``seconds_left``
    (a callable) stops measuring when under a minute is left: those rows stay computed."""
    rows = []
    for count in identities:
        for world in world_sizes:
            for head in HEADS:
                row = {"identities": count, "world_size": world, "head": head,
                       **computed(head, count, world, embedding, batch), "source": "computed"}
                in_time = seconds_left is None or seconds_left() > 60
                if (count, world) in measured and (world == 1 or head != "full") and in_time:
                    got = measure(head, count, world, embedding, batch, steps)
                    row.update(source="measured", formula_matches=got["state_bytes"] == row["state_bytes"],
                               **{k: v for k, v in got.items() if k not in ("rank", "rows", "state_bytes")},
                               measured_state_bytes=got["state_bytes"])
                rows.append(row)
    return {"embedding_size": embedding, "batch_per_rank": batch, "dtype": "float32", "torch_threads_per_process": 1,
            "rows": rows}


def _size(value: float) -> str:
    return f"{value / 2**30:.3g} GiB" if value >= 2**30 else f"{value / 2**20:.3g} MiB"


def markdown(result: dict[str, Any]) -> str:
    """The README table: state per rank and one step's logit matrix per head; * = measured here."""
    lines = ["| identities | ranks | full head | Partial FC 1.0 | Partial FC 0.1 | one logit matrix: full / PFC 1.0 / PFC 0.1 |",
             "|---:|---:|---:|---:|---:|---:|"]
    by_case: dict[tuple[int, int], dict[str, dict]] = {}
    for row in result["rows"]:
        by_case.setdefault((row["identities"], row["world_size"]), {})[row["head"]] = row
    for (count, world), heads in by_case.items():
        state = [_size(heads[h]["state_bytes"]) + ("*" if heads[h]["source"] == "measured" else "") for h in HEADS]
        logits = " / ".join(_size(heads[h]["logit_bytes"]) for h in HEADS)
        lines.append(f"| {count:,} | {world} | {' | '.join(state)} | {logits} |")
    return "\n".join(lines)


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows for ``stn-face-bench``'s table (figure, CPU-time, wall-clock, target, met): the measured cases."""
    out = []
    for row in result["rows"]:
        if row["source"] != "measured":
            continue
        out.append((f"head {row['head']} C={row['identities']:,} W={row['world_size']}: state GiB; step s; "
                    "peak RSS rise GiB", f"{row['step_cpu_seconds']:.3g}",
                    f"{row['state_bytes'] / 2**30:.3g}; {row['step_seconds']:.3g}; "
                    f"{row['step_peak_rss_bytes'] / 2**30:.3g}", "", ""))
    return out


def bench_section(args: Any, budget: Any) -> dict[str, Any]:
    """The ``head_memory`` section of ``stn-face-bench`` (``--quick``: 1k and 2k identities, 1-2 ranks, 1k on
    2 ranks measured)."""
    if getattr(args, "quick", False):
        return bench_head_memory(measured=((1_000, 2),), identities=(1_000, 2_000), world_sizes=(1, 2),
                                 batch=8, steps=1, seconds_left=budget.left)
    return bench_head_memory(seconds_left=budget.left)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.head_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--computed-only", action="store_true", help="measure nothing (instant)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    from benchmarks.common import machine_info

    result = {"machine": machine_info(), **bench_head_memory(measured=() if args.computed_only else MEASURED)}
    print(markdown(result))
    for row in result["rows"]:
        if row["source"] == "measured":
            print(f"measured {row['head']} C={row['identities']:,} W={row['world_size']}: state "
                  f"{row['measured_state_bytes'] / 2**20:.1f} MiB (formula {'=' if row['formula_matches'] else '!='}), "
                  f"peak RSS rise {row['step_peak_rss_bytes'] / 2**20:.0f} MiB (build {row['build_peak_rss_bytes'] / 2**20:.0f}), "
                  f"step {row['step_seconds'] * 1e3:.0f} ms wall, {row['step_cpu_seconds'] * 1e3:.0f} ms CPU")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
