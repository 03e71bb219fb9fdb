"""`glide-eval parity`: check our samplers against fixtures made with the reference GLIDE code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from glide_eval.cli import echo_json
from glide_eval.parity.core import FIXTURE_CHECKS, results_as_dicts
from glide_eval.parity.run import run_parity


@click.command("parity")
@click.option(
    "--fixtures",
    "fixtures",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory of golden fixtures (the ../shared/golden format).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def parity_command(fixtures: Path, as_json: bool):
    """Compare our models and samplers with fixtures made by the reference GLIDE code."""
    try:
        results = run_parity(fixtures)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
    if not results:
        raise click.ClickException(f"no known fixture files in {fixtures} (known: {', '.join(FIXTURE_CHECKS)})")
    failed = [r for r in results if not r.passed]
    if as_json:
        echo_json(
            {"passed": not failed, "n_cases": len(results), "n_failed": len(failed), "cases": results_as_dicts(results)}
        )
    else:
        for r in results:
            mark = "PASS" if r.passed else "FAIL"
            click.echo(
                f"{mark}  {r.file:<28} {r.case:<40} rel_err={r.rel_error:.3e}  tol={r.tolerance:.0e}"
                + (f"  {r.detail}" if r.detail else "")
            )
        click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)
