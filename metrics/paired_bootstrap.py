"""Paired bootstrap of metric differences between two sample sets that share their inputs.

When the baseline and the candidate were generated from the same captions and the same
noise (sample i of both comes from the same (caption, seed)), their per-sample features
are paired. Each replicate draws one set of indices and evaluates the metric on the
baseline's and on the candidate's rows at those indices; the replicate's value is the
difference. Sample-to-sample variation common to both sides cancels, so the spread is far
smaller than that of two independent bootstraps.

The interval is a normal interval around the observed difference with the bootstrap
standard error: ``diff ± z·SE``. It uses only the spread of the replicates, not their
centre, so a metric whose value shifts under resampling with duplicates (k-NN recall,
FID's covariance) does not move the interval; and a few hundred replicates give a stable
SE even for the far tails a Bonferroni correction asks for. ``z`` comes from `normal_z`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def paired_bootstrap(
    statistic: Callable[[dict], dict], baseline: dict, candidate: dict, rounds: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Replicates of statistic(candidate[idx]) - statistic(baseline[idx]), per statistic key.

    baseline, candidate: {name: array [N, ...]} with one N; `statistic` maps such a dict to
    {key: float}. Every replicate uses the same indices for both sides. Returns
    {key: float64 array [rounds]}.
    """
    n = _common_length(baseline, candidate)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for _ in range(rounds):
        idx = rng.integers(0, n, size=n)
        a = statistic({k: v[idx] for k, v in baseline.items()})
        b = statistic({k: v[idx] for k, v in candidate.items()})
        for key in a:
            out.setdefault(key, []).append(float(b[key]) - float(a[key]))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def normal_interval(difference: float, replicates, z: float) -> tuple[float, float, float]:
    """(low, high, standard error): difference ± z · std(replicates)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    if replicates.size < 2:
        raise ValueError(f"need at least 2 bootstrap replicates, got {replicates.size}")
    se = float(np.std(replicates, ddof=1))
    return float(difference - z * se), float(difference + z * se), se


def _common_length(baseline: dict, candidate: dict) -> int:
    if set(baseline) != set(candidate):
        raise ValueError(f"baseline and candidate hold different arrays: {sorted(baseline)} vs {sorted(candidate)}")
    lengths = {len(v) for v in baseline.values()} | {len(v) for v in candidate.values()}
    if len(lengths) != 1:
        raise ValueError(f"paired arrays must share their first dimension, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if n < 2:
        raise ValueError(f"need at least 2 paired samples, got {n}")
    return n
