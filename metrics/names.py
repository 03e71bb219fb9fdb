"""Metric names, and which direction of each is better: the one registry of both.

`HIGHER_IS_BETTER` holds every metric `metrics.calculate_metrics` reports a value for (its
built-in registry, plus any added with `register_metric(..., higher_is_better=...)`, which
records the direction here). `METRIC_NAMES` are the ones a sweep computes by default and
`SELECTABLE_NAMES` the ones its `[metrics] names` accepts, the regression gate turns
differences into worsening with the directions, and the reports draw Pareto fronts and
compare settings with them.
"""

from __future__ import annotations

from metrics.registry import DuplicateNameError

# metric -> True when a larger value is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "fid": False,
    "is": True,
    "precision": True,
    "recall": True,
    "clip_score": True,
    "kid": False,
    "fid_infinity": False,
}
# the metrics a sweep computes (the config's `[metrics] names`)
METRIC_NAMES: tuple[str, ...] = ("fid", "is", "precision", "recall", "clip_score")
# the metrics a sweep may compute: METRIC_NAMES plus the bias-free ones (KID, FID-infinity)
SELECTABLE_NAMES: tuple[str, ...] = (*METRIC_NAMES, "kid", "fid_infinity")
# the metrics measured against reference statistics
REFERENCE_NAMES: frozenset[str] = frozenset({"fid", "precision", "recall", "kid", "fid_infinity"})


def higher_is_better(metric: str) -> bool:
    """True when larger values of `metric` are better; ValueError for an unknown name."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)})") from None


def register_direction(metric: str, higher: bool, replace: bool = False) -> None:
    """Record which direction of a new metric is better; a known metric keeps its direction
    (`DuplicateNameError` for the other one) unless `replace`."""
    if not isinstance(higher, bool):
        raise TypeError(f"metric {metric!r}: higher_is_better must be True or False, got {higher!r}")
    if HIGHER_IS_BETTER.get(metric, higher) != higher and not replace:
        raise DuplicateNameError(
            f"metric {metric!r} is already registered with higher_is_better={not higher}; "
            "pass replace=True to replace it"
        )
    HIGHER_IS_BETTER[metric] = higher
