"""Output of the bench scripts (run as `python bench/NAME.py`, which puts this folder on sys.path)."""

from __future__ import annotations

import json


def print_report(report: dict, as_json: bool, row: str) -> None:
    """The report as indented JSON, or one line a key: `row` formatted with `key` and `value`."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(row.format(key=key, value=value))
