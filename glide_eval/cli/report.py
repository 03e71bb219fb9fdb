"""`glide-eval report RUN_DIR`: Figure 6, Pareto table, Table 2 and an HTML page from a sweep."""

from __future__ import annotations

from pathlib import Path

import click

from glide_eval.cli import echo_json
from glide_eval.sweep.lock import RunDirBusy
from glide_eval.sweep.rundir import RunDir
from reports.build import ReportError, build_report


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Where to write the report (default: RUN_DIR/report)."
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the process that holds RUN_DIR's lock (a running sweep) instead of refusing to start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
def report_command(run_dir, out_dir, wait, as_json):
    """Build the reports of the sweep in RUN_DIR from its results.parquet.

    Takes RUN_DIR's lock while it reads, so a sweep cannot rewrite the results under it."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise click.ClickException(f"{run.path}: no such run directory (run `glide-eval sweep` first)")
    lock = run.lock("report")
    try:
        lock.acquire(wait=wait, log=lambda m: click.echo(m, err=True))
    except RunDirBusy as e:
        raise click.ClickException(str(e)) from None
    try:
        damaged = run.damaged_results()
        if damaged:
            raise click.ClickException(
                f"{damaged}; rerun `glide-eval sweep` on its config to rebuild it from the shards"
            )
        paths = build_report(run.path, Path(out_dir) if out_dir else None)
    except ReportError as e:
        raise click.ClickException(str(e)) from None
    finally:
        lock.release()
    if as_json:
        echo_json({k: str(v) for k, v in paths.items()})
    else:
        for name, path in paths.items():
            click.echo(f"{name:<12} {path}")
