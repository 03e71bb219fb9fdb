"""Figure 7 of GLIDE: Elo against guidance scale, one curve per guidance family, relative to
unguided sampling, with the bootstrap interval as error bars at every scale (and a band between
scales); one panel per question.

Two model names that spell one setting (``cfg:3`` and ``cfg:3.0``, or ``cfg: 3``) are refused
with an error naming both: they were rated as two models, and merging their ratings after the
fit would be wrong (fix the names in the judgments and fit again)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from human_eval.judgments import short
from human_eval.names import is_unguided, parse_guidance
from storage import atomic_write_with

RATING_COLUMNS = ("question", "model", "rating", "lower", "upper", "anchor")


class FigureError(ValueError):
    """The ratings cannot be drawn as Figure 7 (the message says why)."""


def guidance_curves(ratings: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``ratings`` that are guidance settings, with ``family`` and ``scale``
    columns, sorted; and the names of the models left out (neither guided nor unguided)."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise FigureError(f"ratings table lacks column(s) {', '.join(missing)}")
    anchors = set(ratings["anchor"].fillna("").astype(str))
    if not anchors or not all(is_unguided(a) for a in anchors):
        raise FigureError(
            f"Figure 7 needs ratings relative to unguided sampling, but these are relative to "
            f"{', '.join(sorted(a or 'the mean (no anchor)' for a in anchors))}; "
            "rerun `glide-eval elo` with --anchor unguided (or give elo-plot the judgments CSV)"
        )
    parsed = ratings["model"].map(parse_guidance)
    skipped = sorted(set(ratings.loc[parsed.isna() & ~ratings["model"].map(is_unguided), "model"]))
    curves = ratings[parsed.notna()].copy()
    if curves.empty:
        raise FigureError("no model is named like a guidance setting (FAMILY:SCALE, e.g. cfg:3.0)")
    curves["family"] = [p[0] for p in parsed[parsed.notna()]]
    curves["scale"] = [p[1] for p in parsed[parsed.notna()]]
    _refuse_two_spellings(curves)
    return curves.sort_values(["question", "family", "scale"], ignore_index=True), skipped


def ratings_warnings(ratings: pd.DataFrame) -> list[str]:
    """What a saved ratings table says about its fit: bootstrap replicates left out, per question."""
    if not {"question", "rounds", "valid_rounds"} <= set(ratings.columns):
        return []
    out = []
    for question, rows in ratings.groupby("question", sort=True):
        rounds, valid = int(rows["rounds"].iloc[0]), int(rows["valid_rounds"].iloc[0])
        if valid < rounds:
            out.append(
                f"question {question}: {rounds - valid} of {rounds} bootstrap replicates were separable or "
                "disconnected and left out, so the intervals understate the uncertainty"
            )
    return out


def _refuse_two_spellings(curves: pd.DataFrame) -> None:
    clashes = []
    for (question, family, scale), rows in curves.groupby(["question", "family", "scale"], sort=True):
        names = sorted(set(rows["model"]))
        if len(names) > 1:
            clashes.append(
                f"{' and '.join(map(short, names))} are both {family} at scale {scale:g}"
                f" (question {short(str(question))})"
            )
    if clashes:
        raise FigureError(
            "two names for one guidance setting, rated as separate models: "
            + "; ".join(clashes)
            + ". Use one spelling per setting in the judgments and fit again"
        )


def draw_panel(ax, part: pd.DataFrame) -> None:
    """One question's curves on ``ax``: a line with a vertical bar from lower to upper (the interval)
    at every scale, so a family with a single scale shows its interval too, and a band between scales."""
    for family, rows in part.groupby("family", sort=True):
        (line,) = ax.plot(rows["scale"], rows["rating"], marker="o", label=family)
        ax.vlines(
            rows["scale"],
            rows["lower"],
            rows["upper"],
            color=line.get_color(),
            linewidth=1.5,
            label=f"_{family} interval",
        )
        if len(rows) > 1:
            ax.fill_between(rows["scale"], rows["lower"], rows["upper"], color=line.get_color(), alpha=0.2, linewidth=0)


def draw_figure7(ratings: pd.DataFrame, out: str | Path) -> tuple[list[Path], list[str]]:
    """Write ``out`` as PNG and the same name with .pdf; returns (paths, models left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, skipped = guidance_curves(ratings)
    questions = list(dict.fromkeys(curves["question"]))
    fig, axes = plt.subplots(1, len(questions), figsize=(4.8 * len(questions), 3.8), squeeze=False)
    for ax, question in zip(axes[0], questions):
        draw_panel(ax, curves[curves["question"] == question])
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="unguided")
        ax.set_title(question if question != "all" else "human preference")
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("Elo relative to unguided")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    png = Path(out)
    pdf = png.with_suffix(".pdf")
    if png.suffix.lower() != ".png":
        png = png.with_suffix(".png")
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        atomic_write_with(path, lambda tmp, f=fmt: fig.savefig(tmp, format=f, dpi=150))
    plt.close(fig)
    return [png, pdf], skipped
