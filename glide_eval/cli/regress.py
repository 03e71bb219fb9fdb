"""`glide-eval regress`: gate a candidate checkpoint against a baseline sweep (see `glide_eval.regress`)."""

from __future__ import annotations

from pathlib import Path

import click

from glide_eval.cli import echo_json
from glide_eval.regress.baseline import RegressError
from glide_eval.regress.compare import DEFAULT_ROUNDS
from glide_eval.regress.gate import EXIT_ERROR, regress
from glide_eval.regress.report import markdown
from glide_eval.sweep.config import ConfigError
from glide_eval.sweep.errors import MissingComponentError, SweepError
from storage import DamagedFile


@click.command("regress")
@click.option(
    "--baseline",
    "baseline_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory of the baseline sweep (config.toml, run.json, captions.json, shards/).",
)
@click.option(
    "--candidate",
    "candidate_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder with the candidate checkpoint files (replaces [models.checkpoints]).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Sample the candidate with this config (default: the baseline's config.toml); "
    "its protocol must match the baseline's.",
)
@click.option(
    "-n", "n", type=click.IntRange(min=2), help="Compare the first N sample ids (default: all of the baseline's)."
)
@click.option(
    "--tolerance",
    "tolerances",
    multiple=True,
    metavar="METRIC=VALUE[%]",
    help="Allowed worsening, absolute or percent of the baseline value (default 0). Repeatable.",
)
@click.option(
    "--bootstrap", "rounds", type=click.IntRange(min=2), help=f"Paired bootstrap rounds (default {DEFAULT_ROUNDS})."
)
@click.option(
    "--level",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Family-wise confidence level of the intervals (Bonferroni over settings x metrics).",
)
@click.option("--images", is_flag=True, help="Also compare the sample images pixel by pixel.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: runs/regress/CANDIDATE_NAME)."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def regress_command(
    ctx, baseline_dir, candidate_dir, config_path, n, tolerances, rounds, level, images, out_dir, no_progress, as_json
):
    """Gate a candidate checkpoint against a baseline sweep under the baseline's protocol.

    Exit status: 0 no regression, 1 regression beyond tolerance, 2 could not evaluate.
    """
    try:
        report = regress(
            baseline_dir,
            candidate_dir,
            config_path=config_path,
            n=n,
            tolerances=tolerances,
            rounds=rounds,
            images=images,
            out_dir=out_dir,
            level=level,
            progress=not no_progress,
            log=lambda msg: click.echo(msg, err=True),
        )
    except (RegressError, ConfigError, MissingComponentError, SweepError, DamagedFile) as e:
        if as_json:
            echo_json({"exit_code": EXIT_ERROR, "error": str(e)})
        click.echo(f"Error: could not evaluate: {e}", err=True)
        ctx.exit(EXIT_ERROR)
    if as_json:
        echo_json(report)
    else:
        click.echo(markdown(report))
        click.echo(f"report: {Path(report['out_dir']) / 'regress.md'}", err=True)
    ctx.exit(report["exit_code"])
