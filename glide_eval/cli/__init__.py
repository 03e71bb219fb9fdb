"""The `glide-eval` command line.

Each command group has one module here (glide_eval/cli/*.py) holding nothing but its click
code over the application packages (sweep, regress, parity, toy, data) and the libraries;
this file only collects them. Commands are imported lazily (`COMMANDS` names them as
"module:attribute") so that `glide-eval --help` stays fast and one capability's heavy
imports never slow down another's.
"""

from __future__ import annotations

import importlib
import json
import sys

import click

from glide_eval.allocator import tune_glibc_malloc

# command name -> ("module:attribute" of its click.Command, its one-line help). The help is
# written here too so that `glide-eval --help` lists the commands without importing any of
# them (tests/test_foundation.py checks it equals each command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "parity": (
        "glide_eval.cli.parity:parity_command",
        "Compare our models and samplers with fixtures made by the reference GLIDE code.",
    ),
    "sweep": (
        "glide_eval.cli.sweep:sweep_command",
        "Sample every guidance setting of CONFIG, measure it, and write results.parquet.",
    ),
    "report": (
        "glide_eval.cli.report:report_command",
        "Build the reports of the sweep in RUN_DIR from its results.parquet.",
    ),
    "metrics": (
        "glide_eval.cli.metrics:metrics_command",
        "Metrics of generated images (--gen) against reference images or statistics (--ref).",
    ),
    "coco-reference": (
        "glide_eval.cli.metrics:coco_reference_command",
        "Build (or reuse, when its metadata matches) cached MS-COCO reference statistics.",
    ),
    "coco-captions": (
        "glide_eval.cli.metrics:coco_captions_command",
        "Seeded sample of N (image id, caption) pairs to generate from.",
    ),
    "sample": (
        "glide_eval.cli.sample:sample_command",
        "Sample images for one prompt with GLIDE (base 64px, optionally upsampled to 256px).",
    ),
    "regress": (
        "glide_eval.cli.regress:regress_command",
        "Gate a candidate checkpoint against a baseline sweep under the baseline's protocol.",
    ),
    "elo": (
        "glide_eval.cli.elo:elo_command",
        "Fit human-preference Elo ratings (GLIDE appendix A.1) from pairwise judgments in FILE.csv, "
        "with bootstrap intervals, ranks and win rates, per question.",
    ),
    "elo-plot": (
        "glide_eval.cli.elo:elo_plot_command",
        "Draw GLIDE Figure 7: Elo against guidance scale per guidance family (model names "
        "FAMILY:SCALE, e.g. cfg:3.0, clip:2.0, or a sweep's setting names cfg-1.5, clip-2), relative "
        "to the model named `unguided`.",
    ),
    "agreement": (
        "glide_eval.cli.agreement:agreement_command",
        "Agreement of each metric of the sweep in RUN_DIR with the human judgments in FILE.csv: "
        "Kendall's tau, Spearman's rho and the share of setting pairs ordered alike, between the "
        "settings' metric values and their Elo, per question, with intervals.",
    ),
    "judge": (
        "glide_eval.cli.judge:judge_command",
        "Serve a blind judging page for the images sweeps saved in RUN_DIR(s) (`--save-images png|npz`).",
    ),
    "toy-models": (
        "glide_eval.cli.toy:train_command",
        "Retrain the toy world's models (evaluation nets, base, noised CLIP, upsampler) from scratch.",
    ),
}


def auto_device(ctx, param, value: str) -> str:
    """click callback of --device: "auto" is "cuda" when torch sees a GPU, else "cpu"."""
    if value != "auto":
        return value
    import torch  # only when a command asks for a device (`glide-eval --help` stays light)

    return "cuda" if torch.cuda.is_available() else "cpu"


def echo_json(obj) -> None:
    """Print one JSON document (the global `--json` convention)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or its own --help is asked)."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target[0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        """The command list of --help from `COMMANDS`, laid out as click.Group does it."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="glide-eval")
def main():
    """glide-eval: evaluation harness for GLIDE-style text-to-image diffusion models.

    Every command that prints results takes `--json` for machine-readable output.
    """
    tune_glibc_malloc()  # see glide_eval/allocator.py


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
