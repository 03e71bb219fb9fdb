"""The metrics a sweep can report, and which direction of each is better.

The one list of metric names: the sweep config validates `[metrics] names` with it, the
regression gate turns differences into worsening with it, and the reports draw Pareto
fronts with it.
"""
from __future__ import annotations

# metric -> True when a larger value is better
HIGHER_IS_BETTER: dict[str, bool] = {"fid": False, "is": True, "precision": True, "recall": True,
                                     "clip_score": True}
METRIC_NAMES: tuple[str, ...] = tuple(HIGHER_IS_BETTER)


def higher_is_better(metric: str) -> bool:
    """True when larger values of `metric` are better; ValueError for an unknown name."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRIC_NAMES)})") from None
