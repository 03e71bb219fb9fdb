"""Click options that several `glide-eval` commands share (same flag, same type, same meaning)."""

from __future__ import annotations

import click


def out_file_option(help: str):
    """The required `--out FILE` that a command writes (handed to it as `out_path`)."""
    return click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help=help)
