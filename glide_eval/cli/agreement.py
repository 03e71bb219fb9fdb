"""`glide-eval agreement RUN_DIR FILE.csv`: which metric of a sweep agrees with human raters
(Kendall's tau, Spearman's rho and pair agreement between each metric and the settings' Elo,
per question, with intervals; reports.agreement says how they are computed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from glide_eval.cli import echo_json
from glide_eval.cli.elo import _judgment_options, _load
from glide_eval.cli.report import read_locked
from human_eval.fit import FitError
from reports.agreement import AgreementError, agreement_from_judgments, display_table, provenance, write_agreement
from reports.build import read_results_file


@click.command("agreement")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False))
@_judgment_options
@click.option(
    "--metrics",
    "metric_names",
    default=None,
    help="Comma-separated metrics to compare (default: every metric column of the results).",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: RUN_DIR/agreement).")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the process that holds RUN_DIR's lock (a running sweep) instead of refusing to start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def agreement_command(
    run_dir,
    csv_path,
    question,
    level,
    rounds,
    seed,
    l2,
    fmt,
    drop_invalid,
    encoding,
    metric_names,
    out_dir,
    wait,
    as_json,
):
    """Agreement of each metric of the sweep in RUN_DIR with the human judgments in FILE.csv:
    Kendall's tau, Spearman's rho and the share of setting pairs ordered alike, between the
    settings' metric values and their Elo, per question, with intervals."""
    results, results_path = read_locked(run_dir, wait, "agreement", read_results_file)  # as `report`
    judgments = _load(csv_path, fmt, encoding, drop_invalid)
    metrics = [m.strip() for m in metric_names.split(",") if m.strip()] if metric_names else None
    try:
        run = agreement_from_judgments(
            results, judgments, Path(run_dir).resolve().name, question, metrics, rounds, seed, l2, level, progress=True
        )
    except (AgreementError, FitError) as e:
        raise click.ClickException(f"{csv_path}: {e}") from None
    run.options |= {"format": fmt, "encoding": encoding, "drop_invalid": drop_invalid}
    out = Path(out_dir) if out_dir else Path(run_dir) / "agreement"
    paths = write_agreement(run, out, provenance(run, results_path, csv_path))
    tables = run.tables()
    if as_json:
        echo_json(
            {
                "agreement": json.loads(tables["agreement"].to_json(orient="records")),
                "settings": json.loads(tables["settings"].to_json(orient="records")),
                "warnings": run.warnings(),
                "files": {k: str(v) for k, v in paths.items()},
            }
        )
        return
    for w in run.warnings():
        click.echo(f"warning: {w}", err=True)
    click.echo(display_table(tables["agreement"]).to_string(index=False))
    click.echo(f"wrote {out}/ (agreement, settings as .csv and .parquet; agreement.png/.pdf; provenance.json)")
