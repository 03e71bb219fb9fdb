"""`glide-eval sweep CONFIG` (see `glide_eval.sweep`)."""

from __future__ import annotations

from pathlib import Path

import click

from glide_eval.cli import echo_json
from glide_eval.sweep.config import ConfigError, load_config
from glide_eval.sweep.describe import describe_plan, format_plan
from glide_eval.sweep.errors import MissingComponentError, SweepError
from glide_eval.sweep.run import run_sweep
from reports.build import build_report


@click.command("sweep")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--output-dir", type=click.Path(file_okay=False), help="Override [run.output_dir].")
@click.option("--dry-run", is_flag=True, help="Print the plan (settings, shards, model evaluations) and stop.")
@click.option(
    "--force",
    is_flag=True,
    help="Run even if RUN_DIR was made with another config: shards still valid under the new "
    "config are kept, the others redone, and the metrics recomputed.",
)
@click.option(
    "--save-images",
    type=click.Choice(["none", "png", "npz"]),
    default=None,
    help="Also keep every generated image (default: [run.save_images]).",
)
@click.option(
    "--report", "make_report", is_flag=True, help="Then build the reports (Figure 6, Table 2, HTML) in RUN_DIR/report."
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another process holds RUN_DIR's lock, wait for it instead of stopping (and then resume).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sweep_command(config_path, output_dir, dry_run, force, save_images, make_report, wait, no_progress, as_json):
    """Sample every guidance setting of CONFIG, measure it, and write results.parquet.

    Rerunning resumes: finished shards are verified and skipped, and missing or damaged
    results are rebuilt from them. One process at a time writes a run directory (a second
    one stops, naming the first, or waits with --wait). Under
    `torchrun --nproc-per-node N -m glide_eval sweep CONFIG` shards are spread over ranks.
    """
    try:
        overrides = {"run": {"output_dir": str(Path(output_dir).resolve())}} if output_dir else None
        config = load_config(config_path, overrides)
        if dry_run:
            plan = describe_plan(config, config.output_dir)
            echo_json(plan) if as_json else click.echo(format_plan(plan))
            return

        def report(summary: dict) -> None:  # on rank 0, still holding the run directory's lock
            summary["report"] = str(build_report(config.output_dir)["html"])

        summary = run_sweep(
            config,
            force=force,
            save_images=save_images,
            progress=not no_progress,
            log=lambda msg: click.echo(msg, err=True),
            wait=wait,
            after_merge=report if make_report else None,
        )
    except (ConfigError, SweepError, MissingComponentError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        echo_json(summary)
    else:
        for key in ("results", "report"):
            if key in summary:
                click.echo(f"{key}: {summary[key]}")
