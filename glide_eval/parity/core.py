"""Parity checks of our samplers against fixtures made with the reference GLIDE code: the registry.

A fixture directory holds files in the `../shared/golden` format. Each known file name
has one check, registered with `@fixture_check("name")`; a check returns one
`CaseResult` per compared quantity. Files that are absent are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

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


def results_as_dicts(results: list[CaseResult]) -> list[dict]:
    return [asdict(r) for r in results]
