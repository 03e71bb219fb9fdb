"""The `toy` engine end to end: toy GLIDE models, toy extractors and toy reference statistics
through the sweep and the report. The weights are random (made here in the shipped format),
so the test checks the plumbing whatever the trained weights are."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

# test_preflight.py imports make_random_toy_assets from here
from toy_runs import make_random_toy_assets as make_random_toy_assets
from toy_runs import use_random_toy_world, write_toy_config


def test_toy_sweep_end_to_end(tmp_path, monkeypatch):

    from glide_eval.sweep.config import load_config
    from glide_eval.sweep.run import run_sweep
    from glide_eval.toy.models import load_toy_models
    from metrics.extractors import create_extractor
    from reports.build import build_report
    from samplers.pipeline import sample_images

    use_random_toy_world(tmp_path, monkeypatch)
    path = write_toy_config(
        tmp_path,
        respacing="4",
        run="previews = 3",
        rest="""[grid]
unguided = true
cfg = [3.0]
clip = [2.0]
steps = ["2"]
steps_methods = ["ddim"]
steps_guidance = "cfg:3.0"
[metrics]
reference_n = 32
ci = true
bootstrap = 20
""",
    )
    config = load_config(path)
    run_sweep(config, progress=False, log=lambda m: None)
    df = pd.read_parquet(config.output_dir / "results.parquet")
    assert list(df["setting"]) == ["unguided", "cfg-3", "clip-2", "steps-ddim-2"]
    assert list(df["method"]) == ["ancestral"] * 3 + ["ddim"] and list(df["base_respacing"]) == ["4"] * 3 + ["2"]
    for metric in ("fid", "is", "precision", "recall", "clip_score"):
        assert np.isfinite(df[metric]).all(), metric
    assert (df["n_ref"] == 32).all() and (df["n_samples"] == 12).all()
    assert (df["fid_ci_low"] <= df["fid_ci_high"]).all()
    assert (df["clip_score_ci_low"] <= df["clip_score_ci_high"]).all()
    assert {"sha256_toy_base", "sha256_toy_noised_clip", "sha256_toy_classifier"} <= set(df.columns)

    # the shard's features are the toy classifier's features of the pipeline's images
    captions = json.loads((config.output_dir / "captions.json").read_text())
    models = load_toy_models(clip=False)
    images = sample_images(
        models, captions[:6], list(range(6)), 0, guidance=("cfg", 3.0), respacing="4", batch_size=6
    ).images
    expected = create_extractor("toy-classifier")(images)["pool"].numpy()
    with np.load(config.output_dir / "shards" / "cfg-3" / "00000.npz") as shard:
        np.testing.assert_allclose(shard["feat__pool"], expected, rtol=1e-5, atol=1e-6)
    # a steps setting samples with its own method and respacing
    images = sample_images(
        models, captions[:6], list(range(6)), 0, guidance=("cfg", 3.0), respacing="2", sampler="ddim", batch_size=6
    ).images
    expected = create_extractor("toy-classifier")(images)["pool"].numpy()
    with np.load(config.output_dir / "shards" / "steps-ddim-2" / "00000.npz") as shard:
        np.testing.assert_allclose(shard["feat__pool"], expected, rtol=1e-5, atol=1e-6)

    paths = build_report(config.output_dir)
    assert paths["html"].is_file() and paths["figure6_png"].is_file() and paths["steps_png"].is_file()
