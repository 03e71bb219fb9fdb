"""The `glide-eval` command line.

Each capability lives in its own module and contributes one click command (or group);
this file only collects them. Commands are imported lazily so that `glide-eval --help`
stays fast and one capability's heavy imports never slow down another's.
"""
from __future__ import annotations

import importlib
import json
import sys

import click

from glide_eval.allocator import tune_glibc_malloc

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "parity": "glide_eval.parity:parity_command",
    "sweep": "glide_eval.sweep:sweep_command",
    "report": "glide_eval.report_cli:report_command",
    "metrics": "glide_eval.metrics_cli:metrics_command",
    "coco-reference": "glide_eval.metrics_cli:coco_reference_command",
    "coco-captions": "glide_eval.metrics_cli:coco_captions_command",
    "sample": "glide_eval.sample:sample_command",
    "regress": "glide_eval.regress:regress_command",
    "elo": "glide_eval.elo_cli:elo_command",
    "elo-plot": "glide_eval.elo_cli:elo_plot_command",
    "toy-models": "glide_eval.toy.train:train_command",
    "judge": "glide_eval.judge_cli:judge_command",
}


def echo_json(obj) -> None:
    """Print one JSON document (the global `--json` convention)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="glide-eval")
def main():
    """glide-eval: evaluation harness for GLIDE-style text-to-image diffusion models.

    Every command that prints results takes `--json` for machine-readable output.
    """
    tune_glibc_malloc()  # see glide_eval/allocator.py


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
