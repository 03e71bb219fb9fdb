"""`glide-eval toy-models`: retrain the toy world's models (glide_eval/toy/train.py)."""

from __future__ import annotations

import click

from glide_eval.cli import echo_json
from glide_eval.toy import models as toy_models
from glide_eval.toy.train import STAGES
from glide_eval.toy.train import train as train_stages


@click.command("toy-models")
@click.option("--out", default=str(toy_models.ASSETS), show_default=True, help="folder for weights, logs, manifest")
@click.option("--stages", default=",".join(STAGES), show_default=True, help="comma-separated stages to (re)train")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads per job")
@click.option("--jobs", default=2, show_default=True, help="stages trained in parallel processes")
@click.option("--cache-dir", default=None, help="cache rendered training images here (.npz)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def train_command(out, stages, threads, jobs, cache_dir, as_json):
    """Retrain the toy world's models (evaluation nets, base, noised CLIP, upsampler) from scratch."""
    try:
        results = train_stages(out, [s.strip() for s in stages.split(",") if s.strip()], threads, cache_dir, jobs)
    except ValueError as e:  # an unknown stage name
        raise click.BadParameter(str(e), param_hint="--stages") from None
    if as_json:
        echo_json(results)
