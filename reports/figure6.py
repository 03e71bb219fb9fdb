"""Figure 6 of the GLIDE paper: guidance trade-off curves, one per guidance family.

Panels: precision vs recall, FID vs Inception Score, FID vs CLIP score. Each point is a
setting labelled with its scale (CLIP scale 0: the CLIP family's own unguided point, sampled
with its method); the legend names the sampling methods when families differ in them;
Pareto-optimal points are ringed; bootstrap intervals
(columns `<metric>_ci_low` / `_ci_high`, from `[metrics] ci = true`) are drawn as error bars.

Layout: the legend takes as many columns as fit the figure's width (measured with the
renderer), and the space below the panels it needs; then each point's label is put at the
first of a few offsets around it where it overlaps no other label, no marker and stays inside
its panel (`place_labels`).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.transforms import Bbox

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
    return save_figure(figure6(df, pairs), out_dir, stem)


def figure6(df: pd.DataFrame, pairs) -> plt.Figure:
    """The figure: one panel per (x, y) metric pair, the legend below, the labels placed."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        draw_panel(ax, df, x, y)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_below(fig, handles, labels)
    for ax in axes[0]:
        place_labels(ax)
    return fig


def legend_below(fig, handles, labels) -> None:
    """A legend centred below the panels, in as many columns as fit the figure's width, and the
    panels laid out in the space above it."""
    renderer = fig.canvas.get_renderer()
    for ncol in range(max(len(labels), 1), 0, -1):
        legend = fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
        if legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width or ncol == 1:
            break
        legend.remove()
    height = legend.get_window_extent(renderer).height / fig.bbox.height
    fig.tight_layout(rect=(0, min(height + 0.02, 0.6), 1, 1))


def place_labels(ax) -> None:
    """Move each point label (an annotation of `draw_panel`) to the first offset around its point
    where its box overlaps no label placed before, no marker, and lies inside the panel; where
    none does, the least bad offset (clipped, then over a label, then over a marker). Call after the layout is final."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    radius = MARKER_RADIUS_PT * ax.figure.dpi / 72  # a point's marker and its Pareto ring, in pixels
    markers = [
        Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
        for text in ax.texts
        for px, py in [ax.transData.transform(text.xy)]
    ]
    placed: list = []
    # the widest labels ("unguided") first: they have the fewest free places
    for text in sorted(ax.texts, key=lambda t: -t.get_window_extent(renderer).width):
        best = None
        for offset in LABEL_OFFSETS:
            _set_offset(text, offset)
            box = text.get_window_extent(renderer)
            own = ax.transData.transform(text.xy)
            others = [m for m in markers if not m.contains(*own)]
            # a clipped label is worst, one label over another next, a label over a marker least bad
            cost = (
                1000 * _outside(box, inside)
                + 100 * sum(_overlap(box, b) for b in placed)
                + sum(_overlap(box, m) for m in others)
            )
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        _set_offset(text, best[1])
        placed.append(best[2])


def _set_offset(text, offset) -> None:
    """Offset a label from its point; it extends away from the point (right, left or centred)."""
    text.set_position(offset)
    text.set_horizontalalignment("left" if offset[0] > 0 else "right" if offset[0] < 0 else "center")


# offsets (points) of a label from its point, in order of preference: right-above first, then
# the other corners, above/below, beside, and farther out; all clear the Pareto ring
LABEL_OFFSETS = [
    (7, 5),
    (7, -13),
    (-7, 5),
    (-7, -13),
    (0, 10),
    (0, -19),
    (11, -4),
    (-11, -4),
    (14, 14),
    (-14, 14),
    (14, -23),
    (-14, -23),
    (22, 2),
    (-22, 2),
    (0, 24),
    (0, -32),
]
MARKER_RADIUS_PT = 6.5  # the Pareto ring (scatter s=180: about 13 points across)


def _overlap(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0) * max(height, 0)


def _outside(box, frame) -> float:
    """The area of `box` outside `frame` (display units)."""
    return box.width * box.height - _overlap(box, frame)


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
            ax.annotate(
                text,
                (r[x], r[y]),
                textcoords="offset points",
                xytext=LABEL_OFFSETS[0],
                fontsize=8,
                color=style["color"],
                horizontalalignment="left",
            )
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
