"""Seeded bootstrap confidence intervals over samples.

Each replicate resamples the generated samples with replacement (and, for recall, the
real samples) and recomputes the metric; the reference side of FID is held fixed.
Precision/recall replicates resample the per-sample 0/1 decisions (the k-NN manifolds
are kept fixed), which avoids recomputing N^2 distances per replicate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap(
    n: int, statistic: Callable[[np.ndarray], float], replicates: int, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of statistic(indices) over `replicates` resamples of range(n)."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(replicates)]
    return percentile_interval(values, level)
