"""Run every registered fixture check on a fixture directory."""

from __future__ import annotations

from pathlib import Path

from glide_eval.parity import models, sampling  # noqa: F401  (importing them registers their checks)
from glide_eval.parity.core import FIXTURE_CHECKS, CaseResult


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
