"""Differences between two settings whose generated samples are paired row by row.

Settings of one sweep share captions and per-sample noise: row i of setting A and row i of
setting B come from the same (caption, seed). Each metric's influence values
(`metrics.influence`, `metrics.jackknife`, `metrics.kid`) give
``value_B - value_A - E[...] ≈ mean_i (psi_B,i - psi_A,i)``, so the standard error of the
difference is std(psi_B - psi_A)/sqrt(n): variation common to both rows of a pair cancels.
The interval is ``difference ± z·SE`` (z Bonferroni-corrected over `comparisons`), an
interval of the expected difference at this n with the reference fixed.
"""

from __future__ import annotations

import numpy as np

from metrics.calculate import Options, evaluate
from metrics.influence import standard_error
from metrics.names import HIGHER_IS_BETTER
from metrics.normal import normal_z


def paired_differences(
    gen_a,
    gen_b,
    ref=None,
    names=("fid", "is", "precision", "recall"),
    level: float = 0.95,
    comparisons: int = 1,
    options: Options | None = None,
    allow_nan: bool = False,
) -> dict:
    """{metric: {"a", "b", "difference" (b - a), "se", "ci_low", "ci_high", "distinguishable"}}.

    gen_a, gen_b: generated features of the two settings (as for `calculate_metrics`), row i of
    each from the same caption and noise; same number of samples. `distinguishable`: the
    interval excludes 0.
    """
    values_a, psi_a = evaluate(gen_a, ref, names, options, influence=True, allow_nan=allow_nan)
    values_b, psi_b = evaluate(gen_b, ref, names, options, influence=True, allow_nan=allow_nan)
    if values_a["n_gen"] != values_b["n_gen"] or values_a["n_nan"] or values_b["n_nan"]:
        raise ValueError(
            f"paired settings need the same samples without NaN rows: {values_a['n_gen']} "
            f"(+{values_a['n_nan']} NaN) vs {values_b['n_gen']} (+{values_b['n_nan']} NaN)"
        )
    z = normal_z(level, comparisons)
    out = {}
    for key in psi_a:
        d = float(values_b[key] - values_a[key])
        se = standard_error(psi_b[key] - psi_a[key])
        lo, hi = d - z * se, d + z * se
        out[key] = {
            "a": float(values_a[key]),
            "b": float(values_b[key]),
            "difference": d,
            "se": se,
            "ci_low": lo,
            "ci_high": hi,
            "distinguishable": bool(lo > 0 or hi < 0),
        }
    return out


def difference_rows(result: dict) -> list[dict]:
    """`paired_differences` output as flat rows {"metric", "a", "b", ...} (for DataFrames)."""
    return [{"metric": m, **v, "higher_is_better": HIGHER_IS_BETTER.get(m)} for m, v in result.items()]


def unpaired_se(psi_a, psi_b) -> float:
    """SE of the difference if the two settings were independent samples (for comparison)."""
    return float(np.hypot(standard_error(psi_a), standard_error(psi_b)))
