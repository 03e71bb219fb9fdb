"""Intervals in the reports: paired-difference tables, Pareto sets with uncertainty, and
``12.24 ± 0.08`` / ``[lo, hi]`` formatting. Pure functions of DataFrames (no glide_eval).

Inputs:
- results: one row per setting with columns setting, family, scale, <metric> and, when the
  sweep computed intervals, <metric>_ci_low / <metric>_ci_high (`metrics.calculate_metrics`
  with ci=True);
- differences: one row per (setting_a, setting_b, metric) with columns setting_a, setting_b,
  kind, metric, a, b, difference (b - a), se, ci_low, ci_high, as `metrics.paired.difference_rows`
  gives for `metrics.paired_differences(features[setting_a], features[setting_b], reference)`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from metrics.names import HIGHER_IS_BETTER
from reports.pareto import pareto_mask

DIFFERENCE_COLUMNS = ["setting_a", "setting_b", "kind", "metric", "a", "b", "difference", "se", "ci_low", "ci_high"]


# ---------------------------------------------------------------- which settings to compare
def comparison_pairs(
    results: pd.DataFrame, match_metric: str = "clip_score", families=("cfg", "clip")
) -> list[tuple[str, str, str]]:
    """(setting_a, setting_b, kind) to compare: each family's adjacent scales ("adjacent", a the
    smaller scale) and, across families, each setting of the first family with the setting of
    the second whose `match_metric` is nearest ("cross-family"; skipped without that column)."""
    for column in ("setting", "family", "scale"):
        if column not in results.columns:
            raise ValueError(f"results: column {column!r} is missing")
    pairs = []
    for family in families:
        part = results[results["family"] == family].sort_values("scale")
        names = list(part["setting"])
        pairs += [(a, b, "adjacent") for a, b in zip(names, names[1:])]
    if len(families) == 2 and match_metric in results.columns:
        first = results[results["family"] == families[0]].dropna(subset=[match_metric])
        second = results[results["family"] == families[1]].dropna(subset=[match_metric])
        if not second.empty:
            for _, row in first.iterrows():
                nearest = second.iloc[int(np.argmin(np.abs(second[match_metric].to_numpy() - row[match_metric])))]
                pairs.append((row["setting"], nearest["setting"], "cross-family"))
    return pairs


# ---------------------------------------------------------------- the difference table
def difference_table(differences: pd.DataFrame) -> pd.DataFrame:
    """`differences` plus "distinguishable" (the interval excludes 0) and "better" (the setting
    the difference favours, "" when not distinguishable)."""
    missing = [c for c in DIFFERENCE_COLUMNS if c not in differences.columns]
    if missing:
        raise ValueError(f"differences: columns {missing} are missing")
    out = differences.copy()
    out["distinguishable"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    higher = out["metric"].map(HIGHER_IS_BETTER)
    if higher.isna().any():
        raise ValueError(f"differences: unknown metric(s) {sorted(set(out['metric'][higher.isna()]))}")
    b_better = np.where(higher.astype(bool), out["difference"] > 0, out["difference"] < 0)
    out["better"] = np.where(~out["distinguishable"], "", np.where(b_better, out["setting_b"], out["setting_a"]))
    return out


def difference_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """Markdown: one row per comparison and metric; distinguishable differences in bold."""
    lines = [
        "| a | b | kind | metric | a value | b value | b - a [95% interval] | distinguishable |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for _, r in table.iterrows():
        cell = f"{r['difference']:+.{digits}g} [{r['ci_low']:+.{digits}g}, {r['ci_high']:+.{digits}g}]"
        if r["distinguishable"]:
            cell = f"**{cell}**"
        verdict = f"yes ({r['better']} better)" if r["distinguishable"] else "no"
        lines.append(
            f"| {r['setting_a']} | {r['setting_b']} | {r['kind']} | {r['metric']} | "
            f"{r['a']:.{digits + 1}g} | {r['b']:.{digits + 1}g} | {cell} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Pareto sets with uncertainty
def _better(metric: str, lo_a: float, hi_a: float, lo_b: float, hi_b: float) -> bool:
    """Is a better than b beyond both intervals (they do not overlap)?"""
    return lo_a > hi_b if HIGHER_IS_BETTER[metric] else hi_a < lo_b


def _bounds(row, metric: str) -> tuple[float, float]:
    lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return row[metric], row[metric]  # no interval: the point itself
    return lo, hi


def _paired_better(differences: pd.DataFrame | None, metric: str, a: str, b: str) -> bool | None:
    """Is setting a better than b on metric by the paired interval? None when not compared."""
    if differences is None:
        return None
    rows = differences[
        (differences["metric"] == metric)
        & (
            ((differences["setting_a"] == a) & (differences["setting_b"] == b))
            | ((differences["setting_a"] == b) & (differences["setting_b"] == a))
        )
    ]
    if rows.empty:
        return None
    r = rows.iloc[0]
    lo, hi = (r["ci_low"], r["ci_high"]) if r["setting_b"] == a else (-r["ci_high"], -r["ci_low"])  # a - b
    return lo > 0 if HIGHER_IS_BETTER[metric] else hi < 0


def dominance_status(results: pd.DataFrame, x: str, y: str, differences: pd.DataFrame | None = None) -> pd.Series:
    """Per setting: "pareto" (no point dominates it), "dominated" (some point is better in both
    metrics beyond the uncertainty: by the paired interval when `differences` has the pair, else
    by non-overlapping intervals) or "dominated, within uncertainty"."""
    front = pareto_mask(results[x], results[y], HIGHER_IS_BETTER[x], HIGHER_IS_BETTER[y])
    rows = [r for _, r in results.iterrows()]
    status = []
    for i, r in enumerate(rows):
        if front[i]:
            status.append("pareto")
            continue
        sure = False
        for j, other in enumerate(rows):
            if j == i:
                continue
            verdicts = []
            for metric in (x, y):
                paired = _paired_better(differences, metric, other["setting"], r["setting"])
                verdicts.append(
                    paired if paired is not None else _better(metric, *_bounds(other, metric), *_bounds(r, metric))
                )
            sure = sure or all(verdicts)
        status.append("dominated" if sure else "dominated, within uncertainty")
    return pd.Series(status, index=results.index, name="status")


# ---------------------------------------------------------------- formatting
def format_interval(
    value: float,
    low: float | None = None,
    high: float | None = None,
    style: str = "pm",
    digits: int = 2,
    latex: bool = False,
) -> str:
    """ "12.24 ± 0.08" (style "pm": half the interval's width) or "12.24 [12.16, 12.32]" (style
    "interval"); the bare value when there is no interval. LaTeX: "12.24 $\\pm$ 0.08"."""
    if value is None or not math.isfinite(value):
        return ""
    text = f"{value:.{digits}f}"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return text
    if style == "pm":
        sign = r"$\pm$" if latex else "±"
        return f"{text} {sign} {(high - low) / 2:.{digits}f}"
    if style == "interval":
        return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"
    raise ValueError(f"unknown interval style {style!r} (pm or interval)")


def dominance_table(results: pd.DataFrame, pairs, differences: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every setting for each metric pair (x, y) in `pairs` whose columns `results` has: columns
    pair, setting, x_metric, x, y_metric, y, status (`dominance_status`), Pareto points first."""
    out = []
    for x, y in pairs:
        if x not in results.columns or y not in results.columns:
            continue
        part = results.dropna(subset=[x, y])
        status = dominance_status(part, x, y, differences)
        order = {"pareto": 0, "dominated, within uncertainty": 1, "dominated": 2}
        for (_, r), st in sorted(zip(part.iterrows(), status), key=lambda t: (order[t[1]], t[0][1][x])):
            out.append(
                {
                    "pair": f"{y} vs {x}",
                    "setting": r["setting"],
                    "x_metric": x,
                    "x": r[x],
                    "y_metric": y,
                    "y": r[y],
                    "status": st,
                }
            )
    return pd.DataFrame(out, columns=["pair", "setting", "x_metric", "x", "y_metric", "y", "status"])
