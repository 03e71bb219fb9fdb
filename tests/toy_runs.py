"""Helpers of the toy-engine tests: random toy weights in the shipped format and a toy sweep config."""

from __future__ import annotations

from pathlib import Path


def make_random_toy_assets(folder):
    """Every toy weight file, random-initialised, in the shipped format (independent of training)."""
    import torch

    from glide_eval.toy import models as toy_models

    torch.manual_seed(0)
    options = {
        "base": toy_models.BASE_OPTIONS,
        "upsample": toy_models.UPSAMPLE_OPTIONS,
        "noised_clip": toy_models.NOISED_CLIP_CONFIG,
        "classifier": toy_models.CLASSIFIER_OPTIONS,
        "clip": toy_models.CLIP_OPTIONS,
    }
    folder.mkdir()
    for kind, opts in options.items():
        toy_models.save_weights(toy_models.build(kind, opts), kind, opts, folder / toy_models.FILES[kind])


def use_random_toy_world(tmp_path: Path, monkeypatch) -> Path:
    """Random toy weights under tmp_path/assets as $GLIDE_EVAL_TOY_ASSETS, and a cache in tmp_path/cache."""
    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    make_random_toy_assets(tmp_path / "assets")
    monkeypatch.setenv("GLIDE_EVAL_TOY_ASSETS", str(tmp_path / "assets"))
    return tmp_path / "assets"


def write_toy_config(folder, rest, *, respacing, batch_size=6, n=12, output_dir=None, name="toy.toml", **more) -> Path:
    """folder/NAME, a toy-engine sweep config writing to `output_dir` (default folder/out): shards of one
    batch, on the CPU, toy captions at the toy resolution.

    `rest` is the tables after [captions]; more=... (run, models, sampler) are more lines of those tables.
    """
    from glide_eval.toy.models import BASE_RESOLUTION

    assert set(more) <= {"run", "models", "sampler"}, more
    path = folder / name
    path.write_text(f"""
[run]
output_dir = "{output_dir or folder / "out"}"
batch_size = {batch_size}
shard_size = {batch_size}
device = "cpu"
{more.get("run", "")}
[models]
engine = "toy"
{more.get("models", "")}
[sampler]
resolution = {BASE_RESOLUTION}
base_respacing = "{respacing}"
{more.get("sampler", "")}
[captions]
source = "toy"
n = {n}
{rest}""")
    return path
