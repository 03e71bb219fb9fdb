"""Build every report of a sweep run from its results (`glide-eval report RUN_DIR`).

Needs only RUN_DIR/results.parquet (or results.csv). previews.npz adds the sample grids
and run.json the provenance; without them those sections say what is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from reports import html as page
from reports.figure6 import plot_figure6
from reports.files import atomic_write_text
from reports.pareto import pareto_table
from reports.steps import plot_steps
from reports.table2 import table2, to_latex, to_markdown

FAMILY_ORDER = {"none": 0, "cfg": 1, "clip": 2, "steps": 3}


class ReportError(RuntimeError):
    """The run directory cannot be reported on; the message names the file."""


def read_results(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    parquet, csv = run_dir / "results.parquet", run_dir / "results.csv"
    if parquet.is_file():
        df = pd.read_parquet(parquet)
    elif csv.is_file():
        df = pd.read_csv(csv)
    else:
        raise ReportError(f"{run_dir}: no results.parquet or results.csv (run `glide-eval sweep` first)")
    for column in ("setting", "family", "scale"):
        if column not in df.columns:
            raise ReportError(f"{parquet if parquet.is_file() else csv}: column {column!r} is missing")
    order = df["family"].map(FAMILY_ORDER).fillna(len(FAMILY_ORDER))
    return df.assign(_order=order).sort_values(["_order", "scale"]).drop(columns="_order") \
        .reset_index(drop=True)


def read_previews(run_dir: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    path = Path(run_dir) / "previews.npz"
    if not path.is_file():
        return {}, []
    with np.load(path) as f:
        previews = {k[len("setting__"):]: f[k] for k in f.files if k.startswith("setting__")}
        captions = [str(c) for c in f["captions"]]
    return previews, captions


def pareto_markdown(pareto: pd.DataFrame) -> str:
    lines = ["| metric pair | setting | x | y |", "| --- | --- | ---: | ---: |"]
    for _, r in pareto.iterrows():
        lines.append(f"| {r['pair']} | {r['setting']} | {r['x_metric']} = {r['x']:.4g} | "
                     f"{r['y_metric']} = {r['y']:.4g} |")
    return "\n".join(lines) + "\n"


def build_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write figure6.{png,pdf}, steps.{png,pdf} (when the run has `steps` settings),
    pareto.{csv,md}, table2.{md,tex}, report.html; returns their paths."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    df = read_results(run_dir)
    guidance = df[df["family"] != "steps"]  # Figure 6 and the Pareto sets compare guidance only
    out: dict[str, Path] = {}

    figures = plot_figure6(guidance, out_dir)
    out.update({f"figure6_{p.suffix[1:]}": p for p in figures})
    steps_figures = plot_steps(df, out_dir)
    out.update({f"steps_{p.suffix[1:]}": p for p in steps_figures})

    pareto = pareto_table(guidance)
    atomic_write_text(out_dir / "pareto.csv", pareto.to_csv(index=False))
    atomic_write_text(out_dir / "pareto.md", pareto_markdown(pareto))
    out["pareto_csv"], out["pareto_md"] = out_dir / "pareto.csv", out_dir / "pareto.md"

    t2 = table2(df)
    atomic_write_text(out_dir / "table2.md", to_markdown(t2))
    atomic_write_text(out_dir / "table2.tex", to_latex(t2))
    out["table2_md"], out["table2_tex"] = out_dir / "table2.md", out_dir / "table2.tex"

    atomic_write_text(out_dir / "report.html", report_html(run_dir, df, figures, pareto, t2,
                                                                  steps_figures))
    out["html"] = out_dir / "report.html"
    return out


def report_html(run_dir: Path, df: pd.DataFrame, figures: list[Path], pareto: pd.DataFrame,
                t2: pd.DataFrame, steps_figures: list[Path] = ()) -> str:
    sections = []
    png = [p for p in figures if p.suffix == ".png"]
    sections.append(("Figure 6: guidance trade-offs", page.figure_html(png[0], "Figure 6") if png else
                     "<p>No metric pair of Figure 6 (precision/recall, IS/FID, CLIP score/FID) "
                     "is in the results.</p>"))
    steps_png = [p for p in steps_figures if p.suffix == ".png"]
    if steps_png:
        sections.append(("Sampling steps", "<p>FID against the number of base sampling steps, "
                         "one line per sampler (the <code>steps</code> settings).</p>"
                         + page.figure_html(steps_png[0], "FID vs sampling steps")))
    sections.append(("Pareto-optimal settings", page.table_html(
        pareto[["pair", "setting", "x_metric", "x", "y_metric", "y"]],
        text_columns=("pair", "setting", "x_metric", "y_metric"))))
    t2_view = t2.assign(FID=[d if not z else "" for d, z in zip(t2["display"], t2["zero_shot"])],
                        **{"zero-shot FID": [d if z else "" for d, z in zip(t2["display"], t2["zero_shot"])]})
    sections.append(("Table 2: MS-COCO FID", page.table_html(
        t2_view[["model", "FID", "zero-shot FID", "source", "protocol"]],
        text_columns=("model", "source", "protocol"))))
    skip = {"versions", "config_hash", "generation_hash"}
    shown = [c for c in df.columns if c not in skip and not c.startswith("sha256_")]
    sections.append(("Results", page.table_html(df[shown], text_columns=("setting", "family"))))

    previews, captions = read_previews(run_dir)
    if previews:
        order = list(df["setting"])
        sections.append(("Samples", "<p>Each row is one caption with the same seed in every "
                         "column; columns are the guidance settings.</p>"
                         + page.sample_grid_html(previews, captions, order)))
    else:
        sections.append(("Samples", f"<p>No previews.npz in {run_dir}: sample grids are not shown.</p>"))

    prov = [("config_hash", df["config_hash"].iloc[0] if "config_hash" in df else "")]
    prov += [(c, df[c].iloc[0]) for c in df.columns if c.startswith("sha256_")]
    if "versions" in df:
        prov += sorted(json.loads(df["versions"].iloc[0]).items())
    sections.append(("Provenance", page.table_html(pd.DataFrame(prov, columns=["item", "value"]),
                                                   text_columns=("item", "value"))))
    return page.render_page(f"glide-eval sweep report: {run_dir.name}", sections)
