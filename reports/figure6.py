"""Figure 6 of the GLIDE paper: guidance trade-off curves, one per guidance family.

Panels: precision vs recall, FID vs Inception Score, FID vs CLIP score. Each point is a
setting labelled with its scale (CLIP scale 0: the CLIP family's own unguided point, sampled
with its method); the legend names the sampling methods when families differ in them;
Pareto-optimal points are ringed; bootstrap intervals
(columns `<metric>_ci_low` / `_ci_high`, from `[metrics] ci = true`) are drawn as error bars.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from reports.pareto import FIGURE6_PAIRS, HIGHER_IS_BETTER, LABELS, available_pairs, pareto_mask
from storage import atomic_write_bytes

FAMILY_STYLE = {
    "cfg": {"label": "classifier-free guidance", "color": "tab:blue", "marker": "o"},
    "clip": {"label": "CLIP guidance", "color": "tab:orange", "marker": "s"},
    "none": {"label": "unguided", "color": "black", "marker": "*"},
}


def plot_figure6(df: pd.DataFrame, out_dir: Path, stem: str = "figure6") -> list[Path]:
    """Write STEM.png and STEM.pdf atomically; returns their paths (none if no panel has data).

    Rows of the `steps` family (FID vs sampling steps, reports/steps.py) are left out."""
    df = df[df["family"] != "steps"]
    pairs = available_pairs(df, FIGURE6_PAIRS)
    if not pairs or df.empty:
        return []
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        draw_panel(ax, df, x, y)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) or 1, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, out_dir, stem)


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write `fig` as STEM.png and STEM.pdf in out_dir (atomically) and close it."""
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150)
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def interval(df: pd.DataFrame, metric: str):
    """[2, N] distances to the confidence bounds (metric_ci_low / _ci_high columns), or None."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in df.columns or high not in df.columns:
        return None
    return [(df[metric] - df[low]).clip(lower=0).to_numpy(), (df[high] - df[metric]).clip(lower=0).to_numpy()]


def draw_panel(ax, df: pd.DataFrame, x: str, y: str) -> None:
    front = pareto_mask(df[x], df[y], HIGHER_IS_BETTER[x], HIGHER_IS_BETTER[y])
    df = df.assign(_pareto=front)
    # families sampled with different methods (e.g. `clip_method`) say which in the legend
    by_method = "method" in df.columns and df["method"].nunique() > 1
    for family in ("cfg", "clip", "none"):
        part = df[df["family"] == family].sort_values("scale")
        if part.empty:
            continue
        style = FAMILY_STYLE[family]
        label = style["label"] + (f" ({', '.join(sorted(set(part['method'])))})" if by_method else "")
        ax.plot(
            part[x],
            part[y],
            marker=style["marker"],
            color=style["color"],
            label=label,
            linestyle="-" if family != "none" else "none",
            markersize=7 if family != "none" else 11,
        )
        xerr, yerr = interval(part, x), interval(part, y)
        if xerr is not None or yerr is not None:
            ax.errorbar(part[x], part[y], xerr=xerr, yerr=yerr, fmt="none", ecolor=style["color"], alpha=0.5, capsize=2)
        for _, r in part.iterrows():
            text = "unguided" if family == "none" else f"{r['scale']:g}"
            ax.annotate(text, (r[x], r[y]), textcoords="offset points", xytext=(5, 4), fontsize=8, color=style["color"])
    best = df[df["_pareto"]]
    ax.scatter(
        best[x],
        best[y],
        s=180,
        facecolors="none",
        edgecolors="crimson",
        linewidths=1.5,
        label="Pareto-optimal",
        zorder=3,
    )
    ax.set_xlabel(LABELS[x] + (" (higher is better)" if HIGHER_IS_BETTER[x] else " (lower is better)"))
    ax.set_ylabel(LABELS[y] + (" (higher is better)" if HIGHER_IS_BETTER[y] else " (lower is better)"))
    ax.set_title(f"{LABELS[y]} vs {LABELS[x]}")
    ax.grid(alpha=0.3)
