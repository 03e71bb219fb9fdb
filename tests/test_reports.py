"""Reports: Pareto fronts, Table 2, Figure 6 files and the self-contained HTML page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from glide_eval.cli import main
from reports.build import build_report
from reports.pareto import pareto_mask, pareto_table
from reports.table2 import PAPER_ROWS, protocol_gaps, table2, to_latex, to_markdown


def brute_force_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of maximal points (both coordinates maximised), by pairwise comparison."""
    front = set()
    for i, (a, b) in enumerate(points):
        beaten = any((c >= a and d >= b) and (c, d) != (a, b) for c, d in points)
        if not beaten:
            front.add(i)
    return front


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=12))
def test_pareto_mask_matches_brute_force(points):
    a = np.array([p[0] for p in points], float)
    b = np.array([p[1] for p in points], float)
    assert set(np.flatnonzero(pareto_mask(a, b, True, True))) == brute_force_front(points)
    # minimising a metric is maximising its negation
    assert set(np.flatnonzero(pareto_mask(-a, b, False, True))) == brute_force_front(points)


def test_pareto_mask_example_and_nan():
    fid = [20.0, 12.0, 15.0, 11.0, float("nan")]
    clip = [0.20, 0.25, 0.30, 0.22, 0.99]
    # lower FID and higher CLIP: (12, .25) (15, .30) (11, .22) are optimal; (20, .2) is beaten
    assert list(pareto_mask(fid, clip, False, True)) == [False, True, True, True, False]


# torch-fidelity's weights-inception-2015-12-05-6726825d.pth (the file name carries the first 8)
TORCH_FIDELITY_INCEPTION_SHA256 = "6726825d" + "0" * 56


def synthetic_results(with_protocol_row: bool = False) -> pd.DataFrame:
    rows = []
    for family, scales in (("none", [0.0]), ("cfg", [1.0, 1.5, 3.0]), ("clip", [1.0, 2.0])):
        for s in scales:
            rows.append(
                {
                    "setting": "unguided" if family == "none" else f"{family}-{s:g}",
                    "family": family,
                    "scale": s,
                    "fid": 20 - 6 * s + 2 * s * s + (4 if family == "clip" else 0),
                    "is": 10 + 2 * s,
                    "precision": 0.5 + 0.1 * s,
                    "recall": 0.6 - 0.1 * s,
                    "clip_score": 0.2 + 0.02 * s,
                    "n_samples": 30000 if with_protocol_row else 100,
                    "nan_count": 0,
                    "resolution": 256,
                    "base_respacing": "250",
                    "upsample_respacing": "fast27",
                    "captions_source": "coco",
                    "method": "ancestral",
                    "upsample_temperature": 0.997,
                    "dtype": "float32",
                    "n_ref": 40504,
                    "config_hash": "c" * 64,
                    "sha256_base": "b" * 64,
                    "sha256_inception": TORCH_FIDELITY_INCEPTION_SHA256,
                    "reference_images_sha256": "d" * 64,
                    "versions": '{"numpy": "2"}',
                }
            )
    return pd.DataFrame(rows)


def test_table2_rows_and_formats():
    t = table2(synthetic_results(with_protocol_row=True))
    paper = t[t["source"] == "GLIDE paper"]
    assert list(paper["model"]) == [m for m, *_ in PAPER_ROWS]
    assert paper.set_index("model").loc["GLIDE", "zero_shot_fid"] == 12.24
    assert not paper.set_index("model").loc["AttnGAN", "zero_shot"]
    ours = t[t["source"] == "this run"].set_index("model")
    assert ours.loc["Ours: cfg-1.5", "protocol"] == "Table 2 protocol"
    assert ours.loc["Ours: cfg-3", "protocol"] == "differs: scale 3 (protocol 1.5)"
    assert ours.loc["Ours: cfg-1.5", "zero_shot_fid"] == pytest.approx(15.5)  # 20 - 9 + 4.5
    md = to_markdown(t)
    assert "| GLIDE |  | 12.24 | GLIDE paper |  |" in md
    assert "| Ours: cfg-1.5 |  | 15.50 | this run | Table 2 protocol |" in md
    tex = to_latex(t)
    assert r"DALL-E &  & $\sim$28 & GLIDE paper \\" in tex
    assert r"Ours: cfg-1.5 &  & 15.50 & this run (Table 2 protocol) \\" in tex
    assert tex.count(r"\midrule") == 2


def test_table2_labels_every_departure_from_the_protocol():
    row = synthetic_results(with_protocol_row=True).set_index("setting").loc["cfg-1.5"].to_dict()
    assert protocol_gaps(row) == []
    assert protocol_gaps({**row, "dtype": "float16"}) == []  # the reference code's GPU precision
    for key, value, text in (
        ("method", "ddim", "method ddim (protocol ancestral)"),
        ("n_ref", 5000.0, "n_ref 5000 (protocol 40504)"),
        ("n_ref", 40, "n_ref 40 (protocol 40504)"),
        ("dtype", "bfloat16", "dtype bfloat16 (protocol float32 or float16)"),
        ("upsample_temperature", 1.0, "upsample_temperature 1 (protocol 0.997)"),
        ("upsample_temperature", None, "upsample_temperature not recorded (protocol 0.997)"),
        ("upsample_respacing", "", "upsample_respacing none (protocol fast27)"),
        ("captions_source", "toy", "captions_source toy (protocol coco)"),
    ):
        assert protocol_gaps({**row, key: value}) == [text]
    old = {k: v for k, v in row.items() if k not in ("method", "dtype")}  # results of an older version
    assert protocol_gaps(old) == [
        "method not recorded (protocol ancestral)",
        "dtype not recorded (protocol float32 or float16)",
    ]
    results = synthetic_results(with_protocol_row=True)
    results["method"] = "ddim"
    ours = table2(results).set_index("model")
    assert ours.loc["Ours: cfg-1.5", "protocol"] == "differs: method ddim (protocol ancestral)"


def test_table2_an_inception_that_is_not_torch_fidelitys_is_a_protocol_gap_in_the_table(monkeypatch):
    """Issue 31: a row measured with other Inception weights, or against reference images whose
    fingerprint is not recorded (or not the protocol's), is not labelled as the paper's protocol,
    and the gap shows in the table's own cells (markdown, LaTeX), not only under Provenance."""
    import reports.table2 as t2

    results = synthetic_results(with_protocol_row=True)
    results["sha256_inception"] = "69b44071" + "f" * 56  # random weights in torch-fidelity's format
    gap = "Inception sha256 69b44071... (protocol 6726825d..., torch-fidelity's)"
    row = results.set_index("setting").loc["cfg-1.5"].to_dict()
    assert protocol_gaps(row) == [gap]
    assert protocol_gaps({**row, "sha256_inception": None}) == [
        "Inception sha256 not recorded (protocol 6726825d..., torch-fidelity's)"
    ]
    table = table2(results)
    ours = table.set_index("model").loc["Ours: cfg-1.5"]
    assert ours["protocol"] == f"differs: {gap}"
    assert f"| Ours: cfg-1.5 |  | 15.50 | this run | differs: {gap} |" in to_markdown(table)
    assert "differs: Inception sha256 69b44071..." in to_latex(table)
    assert protocol_gaps(
        {**row, "sha256_inception": TORCH_FIDELITY_INCEPTION_SHA256, "reference_images_sha256": None}
    ) == ["reference images' fingerprint not recorded"]
    monkeypatch.setattr(t2, "PROTOCOL_REFERENCE_IMAGES_SHA256", "e" * 64)  # once the official folder's is known
    assert protocol_gaps({**row, "sha256_inception": TORCH_FIDELITY_INCEPTION_SHA256}) == [
        "reference images dddddddd... (protocol eeeeeeee...)"
    ]


def test_report_builds_from_results_alone(tmp_path):
    synthetic_results().to_parquet(tmp_path / "results.parquet")
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    png = Image.open(out / "figure6.png")
    assert png.size[0] > 2 * png.size[1]  # three panels side by side
    assert (out / "figure6.pdf").read_bytes().startswith(b"%PDF")
    pareto = pd.read_csv(out / "pareto.csv")
    expected = pareto_table(synthetic_results())
    assert list(pareto["setting"]) == list(expected["setting"])
    ivf = pareto[pareto["pair"] == "FID vs Inception Score"]
    # FID is lowest at cfg 1.5, IS highest at cfg 3; every other point is beaten by one of them
    assert list(ivf["setting"]) == ["cfg-3", "cfg-1.5"]
    html = (out / "report.html").read_text()
    assert "No previews.npz" in html and "Figure 6" in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from outside


def with_steps_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Add `steps` rows (FID falling with the number of steps) that would dominate every front."""
    rows = [
        {
            "setting": f"steps-{m}-{n}",
            "family": "steps",
            "scale": 3.0,
            "method": m,
            "base_respacing": str(n),
            "fid": 1.0 + 10.0 / n + (0.5 if m == "ddim" else 0.0),
            "is": 99.0,
            "precision": 0.99,
            "recall": 0.99,
            "clip_score": 0.99,
        }
        for m in ("ancestral", "ddim")
        for n in (50, 25, 10)
    ]
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)


def test_steps_figure_and_figure6_without_the_steps_family(tmp_path):
    from reports.figure6 import plot_figure6
    from reports.steps import plot_steps, steps_rows, steps_title

    plain, mixed = synthetic_results(), with_steps_rows(synthetic_results())
    assert plot_steps(plain, tmp_path / "none") == []
    a = plot_figure6(plain, tmp_path / "a")[0].read_bytes()
    assert plot_figure6(mixed, tmp_path / "b")[0].read_bytes() == a  # steps rows are not drawn
    assert list(steps_rows(mixed).sort_values(["method", "steps"])["steps"]) == [10, 25, 50] * 2
    assert steps_title(steps_rows(mixed)).endswith("(classifier-free scale 3)")
    assert steps_title(steps_rows(mixed).assign(scale=0.0)).endswith("(unguided)")
    assert steps_title(steps_rows(mixed).assign(scale=0.0, n_samples=1024)).endswith("(unguided, 1,024 samples)")
    mixed.to_parquet(tmp_path / "results.parquet")
    out = build_report(tmp_path)
    assert Image.open(out["steps_png"]).size[0] > 0
    assert out["steps_pdf"].read_bytes().startswith(b"%PDF")
    pareto = pd.read_csv(out["pareto_csv"])
    assert list(pareto["setting"]) == list(pareto_table(plain)["setting"])
    html = out["html"].read_text()
    assert "Sampling steps" in html and "steps-ddim-10" in html
    synthetic_results().to_parquet(tmp_path / "results.parquet")
    out = build_report(tmp_path, tmp_path / "plain")
    assert "steps_png" not in out and "Sampling steps" not in out["html"].read_text()


def test_report_refuses_a_directory_without_results(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no results.parquet" in result.output


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_html_report_renders_in_headless_chromium(tmp_path):
    from test_sweep import write_config

    from glide_eval.sweep.config import load_config
    from glide_eval.sweep.run import run_sweep

    config = load_config(write_config(tmp_path, n=6, shard_size=3))
    run_sweep(config, progress=False, log=lambda m: None)
    paths = build_report(config.output_dir)
    copy = tmp_path / "elsewhere" / "page.html"  # self-contained: works away from its folder
    copy.parent.mkdir()
    shutil.copy(paths["html"], copy)
    dom = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    settings_count, previews = 4, 2
    assert f'data-images-loaded="{1 + settings_count * previews}"' in body, body
    assert 'data-images-broken="0"' in body
    assert 'alt="Figure 6"' in dom
    grid = re.search(r'<table class="grid">.*?</table>', dom, re.S).group(0)
    assert [h for h in re.findall(r"<th>([^<]+)</th>", grid)] == ["unguided", "cfg-1", "cfg-3", "clip-2"]
    assert grid.count("<tr>") == 1 + previews
    assert "Pareto-optimal settings" in dom and "GLIDE (Validation filtered)" in dom


def test_figure6_draws_bootstrap_intervals(tmp_path):
    from reports.figure6 import interval, plot_figure6

    df = synthetic_results()
    assert interval(df, "fid") is None
    df["fid_ci_low"], df["fid_ci_high"] = df["fid"] - 0.5, df["fid"] + 1.5
    low, high = interval(df, "fid")
    assert np.allclose(low, 0.5) and np.allclose(high, 1.5)
    paths = plot_figure6(df, tmp_path)
    assert [p.name for p in paths] == ["figure6.png", "figure6.pdf"]


def test_figure6_legend_names_the_methods_when_families_differ_in_them():
    import matplotlib.pyplot as plt

    from reports.figure6 import draw_panel

    df = synthetic_results()
    for methods, expected in [
        ({"none": "ddim", "cfg": "ddim", "clip": "ddim"}, ["classifier-free guidance", "CLIP guidance", "unguided"]),
        (
            {"none": "ddim", "cfg": "ddim", "clip": "ancestral"},
            ["classifier-free guidance (ddim)", "CLIP guidance (ancestral)", "unguided (ddim)"],
        ),
    ]:
        fig, ax = plt.subplots()
        draw_panel(ax, df.assign(method=df["family"].map(methods)), "recall", "precision")
        assert ax.get_legend_handles_labels()[1][:3] == expected
        plt.close(fig)


DEFAULT_SWEEP = Path(__file__).parent / "fixtures" / "default_sweep"
SOLVERS = {"ancestral (quadN)", "ddim (quadN)", "dpmpp_2m (quadN)", "unipc (quadN)"}
EXPECTED_LEGENDS = {
    "figure6": {"classifier-free guidance", "CLIP guidance", "unguided", "Pareto-optimal"},
    "steps": SOLVERS | {"reference: steps-ancestral-ddim50"},
}


def figure_problems(fig, legend_entries: set[str]) -> list[str]:
    """What is wrong with a drawn matplotlib figure as a reader sees it: an axes without both axis
    labels or without interval bars, a missing legend entry, text cut off by the figure's edge,
    two texts overlapping (tick labels, axis labels, titles, point labels, legends), a legend
    covering a data point."""
    from matplotlib.container import ErrorbarContainer

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    problems, boxes = [], []  # boxes: (name, bbox) of every visible text and legend

    def add(name, artist):
        if artist.get_visible() and (not hasattr(artist, "get_text") or artist.get_text().strip()):
            boxes.append((name, artist.get_window_extent(renderer)))

    legends = list(fig.legends)
    for i, ax in enumerate(fig.axes):
        if not ax.get_xlabel() or not ax.get_ylabel():
            problems.append(f"axes {i}: missing an axis label")
        if not any(isinstance(c, ErrorbarContainer) for c in ax.containers):
            problems.append(f"axes {i} ({ax.get_title()}): no interval bars")
        add(f"axes {i} title", ax.title)
        add(f"axes {i} xlabel", ax.xaxis.label)
        add(f"axes {i} ylabel", ax.yaxis.label)
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks():
                if low <= tick.get_loc() <= high:
                    add(f"axes {i} {name} tick {tick.label1.get_text()!r}", tick.label1)
        for text in ax.texts:
            add(f"axes {i} label {text.get_text()!r}", text)
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    shown = set()
    for j, legend in enumerate(legends):
        boxes.append((f"legend {j}", legend.get_window_extent(renderer)))
        shown |= {t.get_text() for t in legend.get_texts()}
    if not legend_entries <= shown:
        problems.append(f"legend lacks {sorted(legend_entries - shown)} (has {sorted(shown)})")
    for name, box in boxes:
        if box.x0 < canvas.x0 - 1 or box.y0 < canvas.y0 - 1 or box.x1 > canvas.x1 + 1 or box.y1 > canvas.y1 + 1:
            problems.append(f"{name} is cut off by the figure's edge")
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (name_a, box_a), (name_b, box_b) = boxes[a], boxes[b]
            wide = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            high = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if wide > 1 and high > 1:
                problems.append(f"{name_a} overlaps {name_b}")
    for i, ax in enumerate(fig.axes):  # a legend inside an axes must not hide its data
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " "):
                continue
            for x, y in ax.transData.transform(line.get_xydata()):
                if box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1:
                    problems.append(f"axes {i}: the legend covers a point of {line.get_label()!r}")
    return problems


@pytest.mark.skipif(
    find_chromium() is None or shutil.which("chromedriver") is None,
    reason="chromium and chromedriver are not installed (apt: chromium chromium-driver)",
)
def test_default_sweep_report_figures_look_right_in_chromium(tmp_path, monkeypatch):
    """The report of the default sweep (its results and paired differences, tests/fixtures/
    default_sweep, copied from a `make sweep` run) as a reader sees it. Each figure as drawn: both
    axis labels, interval bars on every panel, the legend naming every family / sampler and the
    steps reference, no text cut off or overlapping, no legend over a data point. Then the page in
    headless Chromium (selenium, the system chromedriver) at 1280x800: every figure decodes, fits
    the page's width at a scale whose smallest text is still >= 8 px, overlaps no other element,
    and what Chromium paints is the whole figure (its screenshot matches the PNG scaled to the
    displayed size); the steps verdicts list every solver with a number of steps."""
    import io
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    import reports.figure6
    import reports.steps

    run = tmp_path / "run"
    run.mkdir()
    for name in ("results.csv", "differences.csv"):
        shutil.copy(DEFAULT_SWEEP / name, run / name)
    drawn = {}
    for module in (reports.figure6, reports.steps):
        real = module.save_figure

        def capture(fig, out_dir, stem, real=real):
            drawn[stem] = figure_problems(fig, EXPECTED_LEGENDS[stem])
            return real(fig, out_dir, stem)

        monkeypatch.setattr(module, "save_figure", capture)
    out = build_report(run)
    assert set(drawn) == {"figure6", "steps"}
    assert drawn == {"figure6": [], "steps": []}
    verdicts = pd.read_csv(out["steps_verdicts_csv"])
    assert set(verdicts["method"]) == SOLVERS and verdicts["fewest_steps"].notna().all(), verdicts

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = find_chromium()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        metrics = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.get(out["html"].as_uri())
        layout = driver.execute_script(
            """
            const box = e => { const r = e.getBoundingClientRect();
              return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; };
            const blocks = [...document.querySelectorAll("body > *, table, ul, p, h1, h2, h3")]
              .filter(e => !e.querySelector("img.figure") && e.tagName !== "SCRIPT");
            return {
              page: [document.documentElement.scrollWidth, innerWidth],
              figures: [...document.querySelectorAll("img.figure")].map(img => ({
                alt: img.alt, complete: img.complete, natural: img.naturalWidth, box: box(img)})),
              others: blocks.map(e => ({tag: e.tagName, box: box(e)})),
            };"""
        )
        assert layout["page"][0] <= layout["page"][1], "the page scrolls sideways"
        figures = {f["alt"]: f for f in layout["figures"]}
        assert set(figures) == {"Figure 6", "FID vs sampling steps"}, figures
        smallest_pt = 8  # the point labels; tick labels are 10 pt
        for alt, f in figures.items():
            x0, y0, x1, y1 = f["box"]
            assert f["complete"] and f["natural"] > 0, alt
            scale = (x1 - x0) / f["natural"]
            assert smallest_pt * 150 / 72 * scale >= 8, (alt, scale)  # figures are drawn at 150 dpi
            for other in [*layout["others"], *(g for g in layout["figures"] if g["alt"] != alt)]:
                a0, b0, a1, b1 = other["box"]
                assert min(x1, a1) - max(x0, a0) <= 0 or min(y1, b1) - max(y0, b0) <= 0, (alt, other)
            element = driver.find_element(By.CSS_SELECTOR, f'img.figure[alt="{alt}"]')
            driver.execute_script("arguments[0].scrollIntoView()", element)
            shot = np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("L"), float)
            source = out["figure6_png" if alt == "Figure 6" else "steps_png"]
            expected = np.asarray(Image.open(source).convert("L").resize(shot.shape[::-1], Image.LANCZOS), float)
            assert np.abs(shot - expected).mean() < 6, alt  # the whole figure, not a crop or a blank
        text = driver.find_element(By.TAG_NAME, "body").text
        for solver in SOLVERS:
            assert re.search(rf"{re.escape(solver)}: \d+ steps", text), solver
    finally:
        driver.quit()
