"""Comparing baseline and candidate: paired bootstrap intervals and the verdict rules
(see the `glide_eval.regress` docstring)."""

from __future__ import annotations

import math
import re

import numpy as np

from glide_eval.regress.baseline import RegressError
from metrics.names import HIGHER_IS_BETTER
from metrics.paired_bootstrap import normal_interval, paired_bootstrap

# the interval needs only the bootstrap SE (~7% relative error at 100 rounds); each round costs
# two metric evaluations, and with Inception features FID's 2048x2048 eigendecompositions dominate
DEFAULT_ROUNDS = 100


def parse_tolerances(items) -> dict[str, tuple[float, bool]]:
    """["fid=0.5", "precision=2%"] -> {"fid": (0.5, False), "precision": (2.0, True)}."""
    out = {}
    for item in items or ():
        m = re.fullmatch(r"\s*([a-z_][a-z0-9_]*)\s*=\s*([0-9.eE+-]+)\s*(%?)\s*", item)
        if not m:
            raise RegressError(f"--tolerance {item!r}: expected METRIC=VALUE or METRIC=PERCENT%")
        name, value, pct = m.group(1), m.group(2), m.group(3)
        if name not in HIGHER_IS_BETTER and name != "nan_count":
            raise RegressError(
                f"--tolerance {item!r}: unknown metric {name!r} (known: {', '.join([*HIGHER_IS_BETTER, 'nan_count'])})"
            )
        try:
            v = float(value)
        except ValueError:
            raise RegressError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise RegressError(f"--tolerance {item!r}: must be a finite number >= 0")
        out[name] = (v, bool(pct))
    return out


def verdict(worse: float, low: float, high: float, se: float, tolerance: float) -> str:
    """See the module docstring; worse/low/high are the worsening and its interval."""
    if worse == 0 and se == 0:
        return "identical"
    if low > tolerance:
        return "regression"
    if worse > tolerance:
        return "possible regression"
    if high < 0:
        return "better"
    return "ok"


def compare_setting(
    compute, captions: list[str], base: dict, cand: dict, metric_names: list[str], rounds: int, seed: int
) -> dict:
    """Point values and paired-bootstrap replicates of candidate - baseline for one setting."""
    names = sorted(base["features"])
    if sorted(cand["features"]) != names:
        raise RegressError(f"feature arrays differ: baseline {names}, candidate {sorted(cand['features'])}")
    caps = np.asarray(captions, dtype=object)

    def statistic(arrays: dict) -> dict:
        arrays = dict(arrays)
        values = compute(arrays.pop("__captions__"), arrays)
        return {m: values[m] for m in metric_names}

    def with_caps(side):
        return dict(side["features"], __captions__=caps)

    point_b, point_c = statistic(with_caps(base)), statistic(with_caps(cand))
    replicates = paired_bootstrap(statistic, with_caps(base), with_caps(cand), rounds, seed)
    return {"baseline": point_b, "candidate": point_c, "replicates": replicates}


def compare_setting_paired(
    compute_differences, base: dict, cand: dict, metric_names: list[str], comparisons: int
) -> dict:
    """Point values and the paired standard error (influence values, `metrics.paired_differences`) of
    candidate - baseline for one setting: the engine's `compute_differences` on the two sides' features."""
    names = sorted(base["features"])
    if sorted(cand["features"]) != names:
        raise RegressError(f"feature arrays differ: baseline {names}, candidate {sorted(cand['features'])}")
    result = compute_differences(base["features"], cand["features"], comparisons)
    return {
        "baseline": {m: result[m]["a"] for m in metric_names},
        "candidate": {m: result[m]["b"] for m in metric_names},
        "se": {m: result[m]["se"] for m in metric_names},
    }


def judge(
    metric: str, b: float, c: float, replicates, z: float, tolerance: tuple[float, bool], se: float | None = None
) -> dict:
    """`replicates`: paired-bootstrap replicates of the difference, or None with its standard error `se`."""
    d = c - b
    if se is None:
        low, high, se = normal_interval(d, replicates, z)
    else:
        low, high = d - z * se, d + z * se
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    worse, w_low, w_high = sign * d, min(sign * low, sign * high), max(sign * low, sign * high)
    tol = tolerance[0] / 100 * abs(b) if tolerance[1] else tolerance[0]
    return {
        "metric": metric,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "baseline": b,
        "candidate": c,
        "difference": d,
        "ci_low": low,
        "ci_high": high,
        "se": se,
        "worsening": worse,
        "worsening_low": w_low,
        "worsening_high": w_high,
        "tolerance": tol,
        "verdict": verdict(worse, w_low, w_high, se, tol),
    }


def nan_row(base_nan: int, cand_nan: int, tolerance: tuple[float, bool]) -> dict:
    tol = tolerance[0] / 100 * base_nan if tolerance[1] else tolerance[0]
    worse = cand_nan - base_nan
    v = "identical" if worse == 0 else "regression" if worse > tol else "ok" if worse > 0 else "better"
    return {
        "metric": "nan_count",
        "higher_is_better": False,
        "baseline": base_nan,
        "candidate": cand_nan,
        "difference": worse,
        "tolerance": tol,
        "verdict": v,
    }
