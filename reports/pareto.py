"""Pareto-optimal guidance settings for pairs of metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metrics.names import HIGHER_IS_BETTER

# Figure 6's panels: (x metric, y metric)
FIGURE6_PAIRS = [("recall", "precision"), ("is", "fid"), ("clip_score", "fid")]
LABELS = {
    "fid": "FID",
    "is": "Inception Score",
    "precision": "Precision",
    "recall": "Recall",
    "clip_score": "CLIP score",
}


def pareto_mask(a, b, a_higher_better: bool, b_higher_better: bool) -> np.ndarray:
    """True for points no other point dominates (at least as good in both, better in one).

    Points with a NaN in either metric are never Pareto-optimal.
    """
    a = np.asarray(a, dtype=float) * (1 if a_higher_better else -1)
    b = np.asarray(b, dtype=float) * (1 if b_higher_better else -1)
    ok = np.isfinite(a) & np.isfinite(b)
    mask = np.zeros(len(a), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok.copy()
        others[i] = False
        dominated = others & (a >= a[i]) & (b >= b[i]) & ((a > a[i]) | (b > b[i]))
        mask[i] = not dominated.any()
    return mask


def available_pairs(df: pd.DataFrame, pairs=FIGURE6_PAIRS) -> list[tuple[str, str]]:
    return [(x, y) for x, y in pairs if x in df.columns and y in df.columns]


def pareto_table(df: pd.DataFrame, pairs=FIGURE6_PAIRS) -> pd.DataFrame:
    """One row per (metric pair, Pareto-optimal setting), best first along the x metric."""
    rows = []
    for x, y in available_pairs(df, pairs):
        mask = pareto_mask(df[x], df[y], HIGHER_IS_BETTER[x], HIGHER_IS_BETTER[y])
        front = df[mask].sort_values(x, ascending=not HIGHER_IS_BETTER[x])
        for _, r in front.iterrows():
            rows.append(
                {
                    "pair": f"{LABELS[y]} vs {LABELS[x]}",
                    "setting": r["setting"],
                    "family": r["family"],
                    "scale": r["scale"],
                    "x_metric": x,
                    "x": r[x],
                    "y_metric": y,
                    "y": r[y],
                }
            )
    return pd.DataFrame(rows, columns=["pair", "setting", "family", "scale", "x_metric", "x", "y_metric", "y"])
