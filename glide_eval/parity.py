"""`glide-eval parity`: check our samplers against fixtures made with the reference GLIDE code.

A fixture directory holds files in the `../shared/golden` format. Each known file name
has one check, registered with `@fixture_check("name")`; a check returns one
`CaseResult` per compared quantity. Files that are absent are skipped.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
import torch

from glide_eval.cli import echo_json

MODULE_TOL = 1e-4  # module outputs, relative
LOOP_TOL = 1e-3  # sampling loops, relative, at every step


@dataclass
class CaseResult:
    file: str
    case: str
    rel_error: float
    tolerance: float
    passed: bool
    detail: str = ""


FIXTURE_CHECKS: dict[str, Callable[[Path], list[CaseResult]]] = {}


def fixture_check(filename: str):
    """Register `fn(path) -> list[CaseResult]` as the check for fixture file `filename`."""

    def register(fn):
        FIXTURE_CHECKS[filename] = fn
        return fn

    return register


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (0 when both are zero)."""
    a = torch.as_tensor(actual).double()
    b = torch.as_tensor(expected).double()
    if a.shape != b.shape:
        raise ValueError(f"shape {tuple(a.shape)} != expected {tuple(b.shape)}")
    denom = b.norm().item()
    num = (a - b).norm().item()
    return num / denom if denom > 0 else num


def compare(file: str, case: str, actual, expected, tolerance: float, detail: str = "") -> CaseResult:
    err = rel_error(actual, expected)
    return CaseResult(file, case, err, tolerance, bool(err <= tolerance), detail)


def run_parity(fixtures: Path) -> list[CaseResult]:
    fixtures = Path(fixtures)
    if not fixtures.is_dir():
        raise FileNotFoundError(f"fixture directory not found: {fixtures}")
    results: list[CaseResult] = []
    for name, check in FIXTURE_CHECKS.items():
        path = fixtures / name
        if path.exists():
            results.extend(check(path))
    return results


def results_as_dicts(results: list[CaseResult]) -> list[dict]:
    return [asdict(r) for r in results]


def load_checks() -> None:
    """Import the modules that register fixture checks."""
    from glide_eval import parity_models, parity_sampling  # noqa: F401


@click.command("parity")
@click.option("--fixtures", "fixtures", type=click.Path(path_type=Path), required=True,
              help="Directory of golden fixtures (the ../shared/golden format).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def parity_command(fixtures: Path, as_json: bool):
    """Compare our models and samplers with fixtures made by the reference GLIDE code."""
    load_checks()
    try:
        results = run_parity(fixtures)
    except FileNotFoundError as error:
        raise click.ClickException(str(error))
    if not results:
        raise click.ClickException(f"no known fixture files in {fixtures} (known: {', '.join(FIXTURE_CHECKS)})")
    failed = [r for r in results if not r.passed]
    if as_json:
        echo_json({"passed": not failed, "n_cases": len(results), "n_failed": len(failed),
                   "cases": results_as_dicts(results)})
    else:
        for r in results:
            mark = "PASS" if r.passed else "FAIL"
            click.echo(f"{mark}  {r.file:<28} {r.case:<40} rel_err={r.rel_error:.3e}  tol={r.tolerance:.0e}"
                       + (f"  {r.detail}" if r.detail else ""))
        click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)
