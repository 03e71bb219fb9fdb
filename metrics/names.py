"""Metric names, and which direction of each is better: the one registry of both.

`HIGHER_IS_BETTER` holds every metric `metrics.calculate_metrics` reports a value for (its
built-in registry, plus any added with `register_metric(..., higher_is_better=...)`, which
records the direction here). `METRIC_NAMES` are the ones a sweep computes by default and
`SELECTABLE_NAMES` the ones its `[metrics] names` accepts, the regression gate turns
differences into worsening with the directions, and the reports draw Pareto fronts and
compare settings with them.
"""

from __future__ import annotations

# metric -> True when a larger value is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "fid": False,
    "is": True,
    "precision": True,
    "recall": True,
    "clip_score": True,
    "kid": False,
    "fid_infinity": False,
    "fd_dinov2": False,
    "fd_clip": False,
    "cmmd": False,
    "density": True,
    "coverage": True,
}
# the metrics a sweep computes (the config's `[metrics] names`)
METRIC_NAMES: tuple[str, ...] = ("fid", "is", "precision", "recall", "clip_score")
# the metrics beyond Inception: FD on DINOv2 ViT-L/14 and CLIP ViT-L/14@336 features, CMMD,
# density and coverage (each on its own extractor, see EXTRACTOR_ROLE)
BEYOND_INCEPTION: tuple[str, ...] = ("fd_dinov2", "fd_clip", "cmmd", "density", "coverage")
# the metrics a sweep may compute: METRIC_NAMES plus the bias-free ones (KID, FID-infinity) and
# the ones beyond Inception
SELECTABLE_NAMES: tuple[str, ...] = (*METRIC_NAMES, "kid", "fid_infinity", *BEYOND_INCEPTION)
# the metrics measured against reference statistics
REFERENCE_NAMES: frozenset[str] = frozenset(
    {"fid", "precision", "recall", "kid", "fid_infinity", "fd_dinov2", "fd_clip", "cmmd", "density", "coverage"}
)

# Which image features each metric is computed on: an extractor role. Every role has its own
# extractor (DEFAULT_EXTRACTORS; any registered image extractor may fill it), its own weights file
# and its own reference statistics; all of them are fed from one decode of the images.
INCEPTION_ROLE, DINOV2_ROLE, CLIP_ROLE = "inception", "dinov2", "clip"
ROLES: tuple[str, ...] = (INCEPTION_ROLE, DINOV2_ROLE, CLIP_ROLE)
DEFAULT_EXTRACTORS: dict[str, str] = {
    INCEPTION_ROLE: "inception-v3-compat",
    DINOV2_ROLE: "dinov2-vit-l-14",
    CLIP_ROLE: "clip-vit-l-14-336",
}
EXTRACTOR_ROLE: dict[str, str] = {
    **dict.fromkeys(("fid", "is", "precision", "recall", "kid", "fid_infinity"), INCEPTION_ROLE),
    **dict.fromkeys(("fd_dinov2", "density", "coverage"), DINOV2_ROLE),
    **dict.fromkeys(("fd_clip", "cmmd"), CLIP_ROLE),
}


def roles_for(names) -> list[str]:
    """The extractor roles the metrics `names` need (in ROLES order; the CLIP score needs none:
    its scorer is separate)."""
    wanted = {EXTRACTOR_ROLE[n] for n in names if n in EXTRACTOR_ROLE}
    return [r for r in ROLES if r in wanted]


def higher_is_better(metric: str) -> bool:
    """True when larger values of `metric` are better; ValueError for an unknown name."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)})") from None


def register_direction(metric: str, higher: bool) -> None:
    """Record which direction of a new metric is better; a known metric keeps its direction."""
    if not isinstance(higher, bool):
        raise TypeError(f"metric {metric!r}: higher_is_better must be True or False, got {higher!r}")
    if HIGHER_IS_BETTER.get(metric, higher) != higher:
        raise ValueError(f"metric {metric!r} is already registered with higher_is_better={not higher}")
    HIGHER_IS_BETTER[metric] = higher
