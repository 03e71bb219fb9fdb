"""The report's intervals wiring: RUN_DIR/differences.csv as a table with distinguishable rows
marked, dominance status of every setting, and per solver the fewest steps within the paired
interval of the steps reference. Differences come from `metrics.paired_differences` on
Gaussian features; the expectations from `reports.intervals` / the paired intervals directly."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metrics import calculate_metrics, paired_differences
from reports.build import build_report
from reports.intervals import difference_table, dominance_status
from reports.pareto import FIGURE6_PAIRS
from reports.steps import steps_verdicts

RNG = np.random.default_rng(0)
REF = {"pool": RNG.normal(size=(400, 4))}
NOISE = RNG.normal(size=(300, 4))  # shared by every setting: the samples are paired row by row


def features(shift: float, spread: float = 1.0, seed: int = 0) -> dict:
    """Shared noise plus a setting's own (seeded) jitter: paired, not identical."""
    return {"pool": NOISE * spread + shift + 0.3 * np.random.default_rng(seed + 1).normal(size=NOISE.shape)}


def setting_row(name: str, family: str, scale: float, feats: dict, **extra) -> dict:
    m = calculate_metrics(feats, REF, names=["fid", "precision"], ci=True)
    return {
        "setting": name,
        "family": family,
        "scale": scale,
        "n_samples": 300,
        **extra,
        **{k: v for k, v in m.items() if k.startswith(("fid", "precision", "recall"))},
    }


def difference_rows(a: str, b: str, kind: str, fa: dict, fb: dict, comparisons: int) -> list[dict]:
    out = paired_differences(fa, fb, REF, ["fid", "precision"], comparisons=comparisons)
    return [
        {
            "setting_a": a,
            "setting_b": b,
            "kind": kind,
            "metric": m,
            **{k: v[k] for k in ("a", "b", "difference", "se", "ci_low", "ci_high")},
        }
        for m, v in out.items()
    ]


def run_dir_with_steps(tmp_path):
    guidance = {"cfg-1": features(0.05, 1.0, 1), "cfg-2": features(0.3, 0.8, 2), "cfg-4": features(0.31, 0.8, 3)}
    # each solver approaches the reference (shift 0.1) as the steps grow
    steps = {("ancestral", 250): 0.1}
    steps.update({("ddim", n): 0.1 + 2.0 / n for n in (5, 10, 20, 100)})
    steps.update({("dpmpp_2m", n): 0.1 + 4.0 / n**2 for n in (5, 10, 20)})
    rows = [
        setting_row(k, "cfg", float(k[4:]), f, method="ancestral", base_respacing="250") for k, f in guidance.items()
    ]
    feats = {f"steps-{m}-{n}": features(s, seed=10 + i) for i, ((m, n), s) in enumerate(steps.items())}
    rows += [
        setting_row(f"steps-{m}-{n}", "steps", 3.0, feats[f"steps-{m}-{n}"], method=m, base_respacing=str(n))
        for (m, n) in steps
    ]
    diffs = difference_rows("cfg-1", "cfg-2", "adjacent", guidance["cfg-1"], guidance["cfg-2"], 6)
    diffs += difference_rows("cfg-2", "cfg-4", "adjacent", guidance["cfg-2"], guidance["cfg-4"], 6)
    ref = "steps-ancestral-250"
    for name, f in feats.items():
        if name != ref:
            diffs += difference_rows(ref, name, "steps-reference", feats[ref], f, 1)
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    pd.DataFrame(diffs).to_csv(tmp_path / "differences.csv", index=False)
    return pd.DataFrame(rows), pd.DataFrame(diffs)


def test_report_shows_differences_dominance_and_steps_verdicts(tmp_path):
    results, diffs = run_dir_with_steps(tmp_path)
    out = build_report(tmp_path)
    table = difference_table(diffs)
    assert table["distinguishable"].any() and not table["distinguishable"].all()  # the example has both
    written = pd.read_csv(out["differences_csv"])
    assert list(written["distinguishable"]) == list(table["distinguishable"])
    html = out["html"].read_text()
    section = html[html.index('id="paired-differences"') : html.index('id="table-2')]
    assert section.count('<tr class="marked">') == int(table["distinguishable"].sum())
    md = out["differences_md"].read_text()
    assert md.count("**") == 2 * int(table["distinguishable"].sum())
    # dominance: every guidance setting per available metric pair, with dominance_status's verdict
    dominance = pd.read_csv(out["dominance_csv"])
    guidance = results[results["family"] != "steps"]
    pairs = [(x, y) for x, y in FIGURE6_PAIRS if x in guidance and y in guidance]
    assert len(dominance) == len(pairs) * len(guidance)
    for x, y in pairs:
        expected = dict(zip(guidance["setting"], dominance_status(guidance, x, y, table)))
        got = dominance[dominance["x_metric"] == x]
        assert dict(zip(got["setting"], got["status"])) == expected
    # per solver the fewest steps whose paired FID interval (solver - reference) reaches 0
    verdicts = pd.read_csv(out["steps_verdicts_csv"]).set_index("method")
    fid = table[(table["kind"] == "steps-reference") & (table["metric"] == "fid")]
    for method in ("ddim", "dpmpp_2m"):
        part = fid[fid["setting_b"].str.startswith(f"steps-{method}-")]
        ok = sorted(int(s.rsplit("-", 1)[1]) for s, lo in zip(part["setting_b"], part["ci_low"]) if lo <= 0)
        assert verdicts.loc[method, "fewest_steps"] == ok[0]
    assert verdicts.loc["ddim", "fewest_steps"] > verdicts.loc["dpmpp_2m", "fewest_steps"]  # informative example
    assert "ancestral" not in verdicts.index  # the reference alone on its line: the band, no verdict
    assert "fewest steps whose FID is not distinguishably worse" in html


def test_steps_verdict_none_when_no_setting_reaches_the_reference():
    results = pd.DataFrame(
        {
            "setting": ["steps-ddim-5"],
            "family": ["steps"],
            "scale": [3.0],
            "method": ["ddim"],
            "base_respacing": ["5"],
            "fid": [9.0],
        }
    )
    diffs = pd.DataFrame(
        [
            {
                "setting_a": "r",
                "setting_b": "steps-ddim-5",
                "kind": "steps-reference",
                "metric": "fid",
                "difference": 4.0,
                "ci_low": 3.0,
                "ci_high": 5.0,
            }
        ]
    )
    v = steps_verdicts(results, diffs)
    assert v["fewest_steps"].iloc[0] is None and v["steps_tried"].iloc[0] == "5"


def test_report_of_an_old_run_directory_says_there_are_no_differences(tmp_path):
    run_dir_with_steps(tmp_path)
    (tmp_path / "differences.csv").unlink()
    out = build_report(tmp_path)
    assert "differences_csv" not in out
    assert "no differences.csv" in out["html"].read_text()


def test_steps_figure_draws_the_reference_and_its_interval(tmp_path, monkeypatch):
    import matplotlib.axes

    from reports.steps import plot_steps

    results, _ = run_dir_with_steps(tmp_path)
    calls = []
    original = matplotlib.axes.Axes.axhspan
    monkeypatch.setattr(
        matplotlib.axes.Axes, "axhspan", lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    )
    plot_steps(results, tmp_path / "fig", reference="steps-ancestral-250")
    ref = results.set_index("setting").loc["steps-ancestral-250"]
    assert calls == [(ref["fid_ci_low"], ref["fid_ci_high"])]


def test_each_time_grid_is_its_own_line_and_verdict(tmp_path):
    from reports.steps import line_label, plot_steps

    assert line_label("unipc", "ddim20") == "unipc (ddimN)" and line_label("unipc", "20") == "unipc"
    assert line_label("unipc", "logsnr8") == "unipc (logsnrN)" and line_label("ddim", "quad5") == "ddim (quadN)"
    results = pd.DataFrame(
        {
            "setting": ["steps-unipc-20", "steps-unipc-ddim20", "steps-unipc-logsnr6", "steps-unipc-karras6"],
            "family": ["steps"] * 4,
            "scale": [3.0] * 4,
            "method": ["unipc"] * 4,
            "base_respacing": ["20", "ddim20", "logsnr6", "karras6"],
            "fid": [5.0, 3.0, 3.1, 6.0],
        }
    )
    diffs = pd.DataFrame(
        [
            {
                "setting_a": "r",
                "setting_b": s,
                "kind": "steps-reference",
                "metric": "fid",
                "difference": d,
                "ci_low": d - 1,
                "ci_high": d + 1,
            }
            for s, d in (
                ("steps-unipc-20", 3.0),
                ("steps-unipc-ddim20", 0.5),
                ("steps-unipc-logsnr6", 0.6),
                ("steps-unipc-karras6", 4.0),
            )
        ]
    )
    v = steps_verdicts(results, diffs).set_index("method")
    assert pd.isna(v.loc["unipc", "fewest_steps"]) and v.loc["unipc (ddimN)", "fewest_steps"] == 20
    assert v.loc["unipc (logsnrN)", "fewest_steps"] == 6 and pd.isna(v.loc["unipc (karrasN)", "fewest_steps"])
    assert v["grid"].to_dict() == {
        "unipc": "uniform",
        "unipc (ddimN)": "ddim",
        "unipc (karrasN)": "karras",
        "unipc (logsnrN)": "logsnr",
    }
    figure = plot_steps(results, tmp_path)
    assert [p.suffix for p in figure] == [".png", ".pdf"]


def test_a_reference_alone_on_its_grid_is_the_band_not_a_line(tmp_path, monkeypatch):
    """The default sweep's reference (ancestral on ddim50) is on another grid than its steps rows
    (quadN): it gets no verdict row of its own (it would be 'its own fewest steps') and no line in
    the figure, only the reference band; on a grid shared with steps rows it stays a point of that line."""
    import matplotlib.axes

    from reports.steps import plot_steps

    results = pd.DataFrame(
        {
            "setting": ["steps-ddim-quad10", "steps-ddim-quad5", "steps-ancestral-ddim50"],
            "family": ["steps"] * 3,
            "scale": [0.0] * 3,
            "method": ["ddim", "ddim", "ancestral"],
            "base_respacing": ["quad10", "quad5", "ddim50"],
            "fid": [3.0, 9.0, 2.9],
            "fid_ci_low": [2.5, 8.0, 2.4],
            "fid_ci_high": [3.5, 10.0, 3.4],
        }
    )
    diffs = pd.DataFrame(
        [
            {"setting_a": "steps-ancestral-ddim50", "setting_b": s, "kind": "steps-reference", "metric": "fid"}
            | {"difference": d, "ci_low": d - 0.5, "ci_high": d + 0.5}
            for s, d in (("steps-ddim-quad10", 0.1), ("steps-ddim-quad5", 6.1))
        ]
    )
    v = steps_verdicts(results, diffs)
    assert v[["method", "fewest_steps"]].values.tolist() == [["ddim (quadN)", 10]]
    labels = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes, "plot", lambda self, *a, **k: labels.append(k.get("label")) or original(self, *a, **k)
    )
    plot_steps(results, tmp_path, reference="steps-ancestral-ddim50")
    assert labels == ["ddim (quadN)"]
    # the same reference among rows of its own grid is one of that line's points and verdicts
    shared = pd.concat(
        [
            results,
            results.iloc[[0]].assign(
                setting="steps-ancestral-ddim10", method="ancestral", base_respacing="ddim10", fid=3.2
            ),
        ]
    )
    diffs = pd.concat([diffs, diffs.iloc[[0]].assign(setting_b="steps-ancestral-ddim10", difference=0.3)])
    v = steps_verdicts(shared, diffs).set_index("method")
    assert v.loc["ancestral (ddimN)", "fewest_steps"] == 10 and v.loc["ancestral (ddimN)", "steps_tried"] == "10, 50"
