"""How sure a difference between two rows of a study is: seeds summarised, paired comparisons bootstrapped.

Plain numpy. The inputs are per-pair outcomes (``correct``: the pair was called right under the
10-fold protocol, :func:`stn_face.evaluation.verification.kfold_correct`), one row per training seed,
for two models scored on the very same pairs (same pair file, same order, same test images).

The paired accuracy difference of model A over model B is ``mean over seeds (mean over pairs
(correct_A - correct_B))``; with equal-sized folds this is exactly the difference of the two
``accuracy_mean`` values, averaged over seeds. Its 95 % interval is a percentile bootstrap:

- ``pairs``: the pairs are resampled with replacement (one resample shared by every seed and both
  models, so pair difficulty stays paired); the trained models are held fixed. This is the
  uncertainty from testing on a finite set of 6,000 pairs.
- ``seeds+pairs``: the seeds are resampled too (with replacement, independently of the pairs), so
  training noise enters as well. With three seeds this is coarse; it is the stricter of the two, and
  a difference is called *distinguishable from zero* only when this interval excludes zero.

A table of such comparisons tests many differences at once: at 95 % each, one in twenty true nulls
excludes zero by chance. :func:`holm` adjusts the comparisons' bootstrap p-values (``p_seeds_pairs``,
the two-sided tail of the seeds+pairs resamples at zero) with Holm's step-down method, which keeps the
chance of *any* false "distinguishable" in the table below ``1 - level`` whatever the dependence
between the comparisons (Holm, Scand. J. Statist. 6, 1979).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_p_value", "holm", "paired_difference", "seed_summary"]


def seed_summary(values: Mapping[int, float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (``ddof=1``) across seeds of one number (None values left out).

    Returns ``n`` (seeds with a value), ``mean``, ``std`` (None for fewer than two seeds) and
    ``values`` ({seed: value}, seeds sorted).
    """
    present = {int(seed): float(value) for seed, value in sorted(values.items()) if value is not None}
    array = np.asarray(list(present.values()), dtype=np.float64)
    return {
        "n": len(present),
        "mean": float(array.mean()) if array.size else None,
        "std": float(array.std(ddof=1)) if array.size >= 2 else None,
        "values": present,
    }


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is zero": twice the smaller tail of ``samples`` (B,)
    at zero, each tail counted as ``(k + 1) / (B + 1)`` so that it is never 0, capped at 1. Samples equal
    to zero count in both tails (a difference of exactly zero gets p = 1)."""
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.size
    below = (np.count_nonzero(samples <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(samples >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in the input order; ``None`` entries are no test (one seed) and
    stay ``None``, outside the family. For the ``m`` tests sorted by p, the ``i``-th (from 0) is adjusted
    to ``max over j <= i of min(1, (m - j) p_j)``."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_difference(correct_a: Sequence[Sequence[bool]] | np.ndarray, correct_b: Sequence[Sequence[bool]] | np.ndarray,
                      n_boot: int = 10_000, level: float = 0.95, rng_seed: int = 0,
                      chunk: int = 500, untrained: bool = False) -> dict[str, Any]:
    """Paired accuracy difference A - B with percentile-bootstrap intervals (see the module docstring).

    ``correct_a``, ``correct_b``: ``(S, P)`` booleans, seed ``s`` of A paired with seed ``s`` of B on
    the same ``P`` pairs. Returns ``difference`` (a fraction), ``per_seed`` (S,), ``ci_pairs`` and
    ``ci_seeds_pairs`` (``(low, high)``), ``distinguishable`` (the seeds+pairs interval excludes 0; None
    for one seed, whose interval holds no training noise), ``p_seeds_pairs`` (:func:`bootstrap_p_value` of
    the seeds+pairs resamples; None for one seed), both given for one seed when ``untrained`` (two networks
    scored without training: there is no training noise, the pairs are the whole uncertainty),
    ``n_seeds``, ``n_pairs``, ``n_boot``, ``level``. ``rng_seed`` makes the intervals reproducible.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    b = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same shape (seeds, pairs): got {a.shape} and {b.shape}")
    n_seeds, n_pairs = a.shape
    if n_seeds == 0 or n_pairs == 0:
        raise ValueError("no paired outcomes to compare")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    diff = a.astype(np.float64) - b.astype(np.float64)  # (S, P), values in {-1, 0, 1}
    per_seed = diff.mean(axis=1)
    rng = np.random.default_rng(rng_seed)
    uniform = np.full(n_pairs, 1.0 / n_pairs)
    pairs_only, with_seeds = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = rng.multinomial(n_pairs, uniform, size=size).astype(np.float64)  # (B, P) resampled pairs
        per_seed_boot = counts @ diff.T / n_pairs  # (B, S): each seed's difference on the resampled pairs
        pairs_only.append(per_seed_boot.mean(axis=1))
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size) / n_seeds  # (B, S)
        with_seeds.append(np.sum(per_seed_boot * seed_weights, axis=1))
    with_seeds_samples = np.concatenate(with_seeds)
    judged = n_seeds >= 2 or untrained
    ci_pairs = _percentile_interval(np.concatenate(pairs_only), level)
    ci_seeds = _percentile_interval(with_seeds_samples, level)
    return {
        "difference": float(per_seed.mean()),
        "per_seed": [float(d) for d in per_seed],
        "ci_pairs": ci_pairs,
        "ci_seeds_pairs": ci_seeds,
        # one seed says nothing about training noise: no verdict (untrained networks have none)
        "distinguishable": bool(ci_seeds[0] > 0 or ci_seeds[1] < 0) if judged else None,
        "p_seeds_pairs": bootstrap_p_value(with_seeds_samples) if judged else None,
        "n_seeds": int(n_seeds),
        "n_pairs": int(n_pairs),
        "n_boot": int(n_boot),
        "level": float(level),
    }
