"""Report helpers for intervals: formatting, Table 2 cells, paired-difference tables, Pareto
sets with uncertainty, error bars in the steps figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.intervals import comparison_pairs, difference_markdown, difference_table, dominance_status, format_interval
from reports.table2 import table2, to_latex, to_markdown


def test_format_interval():
    assert format_interval(12.2449, 12.1649, 12.3249) == "12.24 ± 0.08"
    assert format_interval(12.2449, 12.1649, 12.3249, "interval") == "12.24 [12.16, 12.32]"
    assert format_interval(12.2449, 12.1649, 12.3249, latex=True) == r"12.24 $\pm$ 0.08"
    assert format_interval(12.2449) == "12.24" and format_interval(12.2449, float("nan"), 1.0) == "12.24"
    with pytest.raises(ValueError, match="unknown interval style"):
        format_interval(1.0, 0.5, 1.5, "bars")


def test_table2_shows_fid_intervals_in_markdown_and_latex():
    row = {
        "setting": "cfg-1.5",
        "family": "cfg",
        "scale": 1.5,
        "fid": 12.2449,
        "fid_ci_low": 12.1649,
        "fid_ci_high": 12.3249,
        "captions_source": "coco",
    }
    plain = {**row, "setting": "cfg-3", "fid_ci_low": np.nan, "fid_ci_high": np.nan, "fid": 9.87}
    t = table2(pd.DataFrame([row, plain]))
    assert list(t["display"].tail(2)) == ["12.24 ± 0.08", "9.87"]
    assert "| Ours: cfg-1.5 |  | 12.24 ± 0.08 |" in to_markdown(t)
    assert r"12.24 $\pm$ 0.08" in to_latex(t) and "±" not in to_latex(t)
    assert table2(pd.DataFrame([row]), style="interval")["display"].iloc[-1] == "12.24 [12.16, 12.32]"


def results_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "setting": ["unguided", "cfg-1", "cfg-3", "cfg-2", "clip-1", "clip-4"],
            "family": ["none", "cfg", "cfg", "cfg", "clip", "clip"],
            "scale": [0, 1, 3, 2, 1, 4],
            "clip_score": [20.0, 21.0, 25.0, 23.0, 22.8, 24.6],
        }
    )


def test_comparison_pairs_adjacent_and_cross_family():
    pairs = comparison_pairs(results_frame())
    assert pairs[:3] == [
        ("cfg-1", "cfg-2", "adjacent"),
        ("cfg-2", "cfg-3", "adjacent"),
        ("clip-1", "clip-4", "adjacent"),
    ]
    # nearest CLIP-guided point by CLIP score: 21 -> 22.8, 25 -> 24.6, 23 -> 22.8
    assert sorted(pairs[3:]) == [
        ("cfg-1", "clip-1", "cross-family"),
        ("cfg-2", "clip-1", "cross-family"),
        ("cfg-3", "clip-4", "cross-family"),
    ]
    assert len(comparison_pairs(results_frame().drop(columns="clip_score"))) == 3
    with pytest.raises(ValueError, match="'family' is missing"):
        comparison_pairs(results_frame().drop(columns="family"))


def test_difference_table_marks_distinguishable_and_better():
    diffs = pd.DataFrame(
        [
            # FID lower is better: b - a = -0.5 entirely below 0 -> b better
            {
                "setting_a": "a1",
                "setting_b": "b1",
                "kind": "adjacent",
                "metric": "fid",
                "a": 2.0,
                "b": 1.5,
                "difference": -0.5,
                "se": 0.1,
                "ci_low": -0.7,
                "ci_high": -0.3,
            },
            # precision higher is better: -0.02 entirely below 0 -> a better
            {
                "setting_a": "a2",
                "setting_b": "b2",
                "kind": "adjacent",
                "metric": "precision",
                "a": 0.9,
                "b": 0.88,
                "difference": -0.02,
                "se": 0.005,
                "ci_low": -0.03,
                "ci_high": -0.01,
            },
            {
                "setting_a": "a3",
                "setting_b": "b3",
                "kind": "cross-family",
                "metric": "is",
                "a": 10.0,
                "b": 10.1,
                "difference": 0.1,
                "se": 0.1,
                "ci_low": -0.1,
                "ci_high": 0.3,
            },
        ]
    )
    t = difference_table(diffs)
    assert list(t["distinguishable"]) == [True, True, False]
    assert list(t["better"]) == ["b1", "a2", ""]
    md = difference_markdown(t)
    assert "**-0.5 [-0.7, -0.3]**" in md and "yes (b1 better)" in md and md.count("| no |") == 1
    with pytest.raises(ValueError, match="missing"):
        difference_table(diffs.drop(columns="se"))


def test_dominance_status_uses_intervals_and_paired_differences():
    # precision and recall, both higher is better; P is on the front, D clearly dominated by P,
    # W dominated by P in point estimates only (intervals overlap)
    df = pd.DataFrame(
        {
            "setting": ["P", "D", "W"],
            "precision": [0.9, 0.7, 0.88],
            "recall": [0.8, 0.6, 0.79],
            "precision_ci_low": [0.89, 0.69, 0.86],
            "precision_ci_high": [0.91, 0.71, 0.90],
            "recall_ci_low": [0.79, 0.59, 0.77],
            "recall_ci_high": [0.81, 0.61, 0.81],
        }
    )
    assert list(dominance_status(df, "recall", "precision")) == ["pareto", "dominated", "dominated, within uncertainty"]
    # the paired intervals of W - P exclude 0 on both metrics: W is dominated beyond uncertainty
    paired = pd.DataFrame(
        [
            {"setting_a": "W", "setting_b": "P", "metric": "precision", "ci_low": 0.01, "ci_high": 0.03},
            {"setting_a": "W", "setting_b": "P", "metric": "recall", "ci_low": 0.005, "ci_high": 0.015},
        ]
    )
    assert list(dominance_status(df, "recall", "precision", paired)) == ["pareto", "dominated", "dominated"]
    # without any interval columns the points are their own intervals
    bare = df[["setting", "precision", "recall"]]
    assert list(dominance_status(bare, "recall", "precision")) == ["pareto", "dominated", "dominated"]


def test_steps_figure_draws_fid_error_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    from reports.steps import plot_steps

    df = pd.DataFrame(
        {
            "setting": ["s1", "s2"],
            "family": ["steps", "steps"],
            "scale": [0.0, 0.0],
            "method": ["ddim", "ddim"],
            "base_respacing": ["ddim25", "ddim50"],
            "fid": [3.0, 2.0],
            "n_samples": [100, 100],
        }
    )
    calls = []
    original = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(
        matplotlib.axes.Axes, "errorbar", lambda self, *a, **k: calls.append(k) or original(self, *a, **k)
    )
    plot_steps(df, tmp_path / "plain")
    assert calls == []
    plot_steps(df.assign(fid_ci_low=[2.5, 1.9], fid_ci_high=[3.5, 2.1]), tmp_path / "bars")
    assert len(calls) == 1 and np.allclose(calls[0]["yerr"], [[0.5, 0.1], [0.5, 0.1]])
