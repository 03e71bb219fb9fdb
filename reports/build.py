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
from reports.intervals import DIFFERENCE_COLUMNS, difference_markdown, difference_table, dominance_table
from reports.pareto import FIGURE6_PAIRS, pareto_table
from reports.steps import plot_steps, steps_verdicts
from reports.table2 import table2, to_latex, to_markdown
from storage import DamagedFile, atomic_write_text
from storage.rundir import DIFFERENCES_CSV, PREVIEWS_NPZ, RESULTS_CSV, RESULTS_PARQUET, RunFiles

FAMILY_ORDER = {"none": 0, "cfg": 1, "clip": 2, "steps": 3}


class ReportError(RuntimeError):
    """The run directory cannot be reported on; the message names the file."""


def read_results(run_dir: Path) -> pd.DataFrame:
    try:
        found = RunFiles(run_dir).read_results()
    except DamagedFile as e:
        raise ReportError(str(e)) from None
    if found is None:
        raise ReportError(f"{run_dir}: no {RESULTS_PARQUET} or {RESULTS_CSV} (run `glide-eval sweep` first)")
    df, path = found
    for column in ("setting", "family", "scale"):
        if column not in df.columns:
            raise ReportError(f"{path}: column {column!r} is missing")
    order = df["family"].map(FAMILY_ORDER).fillna(len(FAMILY_ORDER))
    return df.assign(_order=order).sort_values(["_order", "scale"]).drop(columns="_order").reset_index(drop=True)


def read_previews(run_dir: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    try:
        return RunFiles(run_dir).read_previews()
    except DamagedFile as e:
        raise ReportError(str(e)) from None


def read_differences(run_dir: Path) -> pd.DataFrame | None:
    """RUN_DIR/differences.csv (paired differences between settings, written by the sweep's merge)
    as `difference_table` gives it; None when the run has none (older run directories)."""
    try:
        df = RunFiles(run_dir).read_differences()
    except DamagedFile as e:
        raise ReportError(str(e)) from None
    if df is None:
        return None
    try:
        return difference_table(df)
    except ValueError as e:
        raise ReportError(f"{RunFiles(run_dir).differences_csv}: {e}") from None


def pareto_markdown(pareto: pd.DataFrame) -> str:
    lines = ["| metric pair | setting | x | y |", "| --- | --- | ---: | ---: |"]
    for _, r in pareto.iterrows():
        lines.append(
            f"| {r['pair']} | {r['setting']} | {r['x_metric']} = {r['x']:.4g} | {r['y_metric']} = {r['y']:.4g} |"
        )
    return "\n".join(lines) + "\n"


def build_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write figure6.{png,pdf}, steps.{png,pdf} (when the run has `steps` settings),
    pareto.{csv,md}, table2.{md,tex}, report.html; returns their paths."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else RunFiles(run_dir).report_dir
    df = read_results(run_dir)
    guidance = df[df["family"] != "steps"]  # Figure 6 and the Pareto sets compare guidance only
    out: dict[str, Path] = {}

    figures = plot_figure6(guidance, out_dir)
    out.update({f"figure6_{p.suffix[1:]}": p for p in figures})
    differences = read_differences(run_dir)
    compared = differences[differences["kind"] == "steps-reference"] if differences is not None else None
    reference = compared["setting_a"].iloc[0] if compared is not None and len(compared) else None
    steps_figures = plot_steps(df, out_dir, reference=reference)
    out.update({f"steps_{p.suffix[1:]}": p for p in steps_figures})

    pareto = pareto_table(guidance)
    atomic_write_text(out_dir / "pareto.csv", pareto.to_csv(index=False))
    atomic_write_text(out_dir / "pareto.md", pareto_markdown(pareto))
    out["pareto_csv"], out["pareto_md"] = out_dir / "pareto.csv", out_dir / "pareto.md"

    dominance = dominance_table(guidance, FIGURE6_PAIRS, differences)
    atomic_write_text(out_dir / "dominance.csv", dominance.to_csv(index=False))
    out["dominance_csv"] = out_dir / "dominance.csv"
    verdicts = None
    if differences is not None:
        atomic_write_text(out_dir / DIFFERENCES_CSV, differences.to_csv(index=False))
        atomic_write_text(out_dir / "differences.md", difference_markdown(differences))
        out["differences_csv"], out["differences_md"] = out_dir / DIFFERENCES_CSV, out_dir / "differences.md"
        verdicts = steps_verdicts(df, differences)
        atomic_write_text(out_dir / "steps_verdicts.csv", verdicts.to_csv(index=False))
        out["steps_verdicts_csv"] = out_dir / "steps_verdicts.csv"

    t2 = table2(df)
    atomic_write_text(out_dir / "table2.md", to_markdown(t2))
    atomic_write_text(out_dir / "table2.tex", to_latex(t2))
    out["table2_md"], out["table2_tex"] = out_dir / "table2.md", out_dir / "table2.tex"

    extra = {"differences": differences, "dominance": dominance, "verdicts": verdicts}
    atomic_write_text(out_dir / "report.html", report_html(run_dir, df, figures, pareto, t2, steps_figures, **extra))
    out["html"] = out_dir / "report.html"
    return out


def report_html(
    run_dir: Path,
    df: pd.DataFrame,
    figures: list[Path],
    pareto: pd.DataFrame,
    t2: pd.DataFrame,
    steps_figures: list[Path] = (),
    differences: pd.DataFrame | None = None,
    dominance: pd.DataFrame | None = None,
    verdicts: pd.DataFrame | None = None,
) -> str:
    sections = []
    png = [p for p in figures if p.suffix == ".png"]
    sections.append(
        (
            "Figure 6: guidance trade-offs",
            page.figure_html(png[0], "Figure 6")
            if png
            else "<p>No metric pair of Figure 6 (precision/recall, IS/FID, CLIP score/FID) is in the results.</p>",
        )
    )
    steps_png = [p for p in steps_figures if p.suffix == ".png"]
    if steps_png:
        sections.append(
            (
                "Sampling steps",
                "<p>FID against the number of base sampling steps, "
                "one line per sampler (the <code>steps</code> settings).</p>"
                + page.figure_html(steps_png[0], "FID vs sampling steps")
                + verdicts_html(verdicts),
            )
        )
    sections.append(("Pareto-optimal settings", pareto_html(pareto, dominance)))
    sections.append(("Paired differences", differences_html(differences)))
    t2_view = t2.assign(
        FID=[d if not z else "" for d, z in zip(t2["display"], t2["zero_shot"])],
        **{"zero-shot FID": [d if z else "" for d, z in zip(t2["display"], t2["zero_shot"])]},
    )
    sections.append(
        (
            "Table 2: MS-COCO FID",
            page.table_html(
                t2_view[["model", "FID", "zero-shot FID", "source", "protocol"]],
                text_columns=("model", "source", "protocol"),
            ),
        )
    )
    skip = {"versions", "config_hash", "generation_hash"}
    shown = [c for c in df.columns if c not in skip and not c.startswith("sha256_")]
    sections.append(("Results", page.table_html(df[shown], text_columns=("setting", "family"))))

    previews, captions = read_previews(run_dir)
    if previews:
        order = list(df["setting"])
        sections.append(
            (
                "Samples",
                "<p>Each row is one caption with the same seed in every "
                "column; columns are the guidance settings.</p>" + page.sample_grid_html(previews, captions, order),
            )
        )
    else:
        sections.append(("Samples", f"<p>No {PREVIEWS_NPZ} in {run_dir}: sample grids are not shown.</p>"))

    prov = [("config_hash", df["config_hash"].iloc[0] if "config_hash" in df else "")]
    prov += [(c, df[c].iloc[0]) for c in df.columns if c.startswith("sha256_")]
    if "versions" in df:
        prov += sorted(json.loads(df["versions"].iloc[0]).items())
    sections.append(
        ("Provenance", page.table_html(pd.DataFrame(prov, columns=["item", "value"]), text_columns=("item", "value")))
    )
    return page.render_page(f"glide-eval sweep report: {run_dir.name}", sections)


def pareto_html(pareto: pd.DataFrame, dominance: pd.DataFrame | None) -> str:
    """Every setting per metric pair with its dominance status (Pareto points marked), else the Pareto sets."""
    if dominance is None or dominance.empty:
        return page.table_html(
            pareto[["pair", "setting", "x_metric", "x", "y_metric", "y"]],
            text_columns=("pair", "setting", "x_metric", "y_metric"),
        )
    return (
        "<p><b>pareto</b>: no setting is better in both metrics; <b>dominated</b>: another setting is "
        "better in both beyond the uncertainty (paired intervals where the pair was compared, else "
        "non-overlapping 95% intervals); <b>dominated, within uncertainty</b>: dominated by the point "
        "estimates only.</p>"
        + page.table_html(
            dominance,
            text_columns=("pair", "setting", "x_metric", "y_metric", "status"),
            marked=dominance["status"] == "pareto",
        )
    )


def differences_html(differences: pd.DataFrame | None) -> str:
    if differences is None:
        return f"<p>This run directory has no {DIFFERENCES_CSV} (made by an older glide-eval): rerun the sweep.</p>"
    if differences.empty:
        return "<p>No settings of this sweep were compared.</p>"
    view = differences[[*DIFFERENCE_COLUMNS, "distinguishable", "better"]]
    return (
        "<p>b - a for settings sampled from the same captions and noise: adjacent scales of a family, "
        "cfg vs CLIP settings of nearest CLIP score (Bonferroni-corrected 95% intervals over these "
        "comparisons), and each steps setting vs the steps reference (95% each). Marked rows are "
        "distinguishable: the interval excludes 0.</p>"
        + page.table_html(
            view, text_columns=("setting_a", "setting_b", "kind", "metric", "better"), marked=view["distinguishable"]
        )
    )


def verdicts_html(verdicts: pd.DataFrame | None) -> str:
    if verdicts is None or verdicts.empty:
        return (
            "<p>No steps setting was compared with a steps reference (<code>[grid] steps_reference</code>, "
            "default ancestral-250, is not sampled by this sweep).</p>"
        )
    lines = []
    for _, r in verdicts.iterrows():
        if r["fewest_steps"] is None or pd.isna(r["fewest_steps"]):
            lines.append(
                f"<li><b>{r['method']}</b>: none of {r['steps_tried']} steps is within the paired "
                f"interval of {r['reference']}</li>"
            )
        else:
            lines.append(
                f"<li><b>{r['method']}</b>: {int(r['fewest_steps'])} steps (of {r['steps_tried']}); FID "
                f"difference from {r['reference']} {r['difference']:+.3g} "
                f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]</li>"
            )
    return (
        "<p>Per sampler, the fewest steps whose FID is not distinguishably worse than the reference's "
        "(the paired 95% interval of setting - reference reaches 0):</p><ul>" + "".join(lines) + "</ul>"
    )
