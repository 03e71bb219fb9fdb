"""The two-sided normal quantile every normal-approximation interval in `metrics` uses."""

from __future__ import annotations

from statistics import NormalDist


def normal_z(level: float = 0.95, comparisons: int = 1) -> float:
    """Two-sided normal quantile for `level`, Bonferroni-corrected over `comparisons`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    return NormalDist().inv_cdf(1 - (1 - level) / comparisons / 2)
