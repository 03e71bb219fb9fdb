"""`glide-eval toy-models`: retrain the toy world's models (glide_eval/toy/train.py), or check
that retraining reproduces the weights in --out (`--verify`)."""

from __future__ import annotations

import click

from glide_eval.cli import echo_json
from glide_eval.toy import models as toy_models
from glide_eval.toy.train import STAGES, verify
from glide_eval.toy.train import train as train_stages


@click.command("toy-models")
@click.option("--out", default=str(toy_models.ASSETS), show_default=True, help="folder for weights, logs, manifest")
@click.option("--stages", default=",".join(STAGES), show_default=True, help="comma-separated stages to (re)train")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads per job")
@click.option("--jobs", default=2, show_default=True, help="stages trained in parallel processes")
@click.option("--cache-dir", default=None, help="cache rendered training images here (.npz)")
@click.option(
    "--verify",
    "check",
    is_flag=True,
    help="retrain --stages into a temporary folder instead and compare each weight file with --out's "
    "(sha256; the largest parameter difference when they differ); exit status 1 when any differs. "
    "All five stages take about 51 min on 2 cores",
)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def train_command(out, stages, threads, jobs, cache_dir, check, as_json):
    """Retrain the toy world's models (evaluation nets, base, noised CLIP, upsampler) from scratch.

    Each stage trains in its own process with torch's CPU kernels pinned (AVX2 on x86-64), so that
    the same torch version and --threads rebuild the shipped files bit for bit on x86-64 CPUs with
    AVX2 (checked on one kind of CPU so far: see the README's toy world)."""
    names = [s.strip() for s in stages.split(",") if s.strip()]
    try:
        results = (verify if check else train_stages)(out, names, threads, cache_dir, jobs)
    except ValueError as e:  # an unknown stage name, or (--verify) a missing manifest entry or file
        hint = "--stages" if str(e).startswith("unknown stage") else "--out"
        raise click.BadParameter(str(e), param_hint=hint) from None
    if as_json:
        echo_json(results)
    elif check:
        for stage, r in results.items():
            click.echo(_verify_line(stage, r))
    if check and not all(r["equal"] for r in results.values()):
        raise SystemExit(1)


def _verify_line(stage: str, r: dict) -> str:
    if r["equal"]:
        verdict = "equal"
    elif r["max_abs_diff"] is None:
        verdict = "differs (other parameter names or shapes)"
    else:
        verdict = f"differs (max parameter difference {r['max_abs_diff']:.3g})"
    lines = [f"{stage}: {verdict}", f"  shipped {r['shipped_sha256']}", f"  rebuilt {r['rebuilt_sha256']}"]
    if r["manifest_sha256"] != r["shipped_sha256"]:
        lines.append(f"  the shipped file is not the one its manifest lists ({r['manifest_sha256']})")
    if not r["same_config"]:
        lines.append("  the shipped file was trained with another config (see manifest.json)")
    if not r["equal"]:
        lines.append(f"  shipped trained on {_cpu(r['shipped_cpu'])}; rebuilt on {_cpu(r['rebuilt_cpu'])}")
    return "\n".join(lines)


def _cpu(record: dict | None) -> str:
    if not record:
        return "an unrecorded CPU"
    return f"{record['machine']} {record['model'] or '(unknown model)'}, {record['capability']} kernels"
