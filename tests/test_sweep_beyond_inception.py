"""A toy sweep asking for fd_dinov2, cmmd, density and coverage ([weights] dinov2 / clip_image,
official-format files of random weights): the shards hold each extractor's features of the same
images, the results and the report carry the new metrics with intervals, and the reference
statistics are cached per extractor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from model_files import make_random_clip, make_random_dinov2
from toy_runs import use_random_toy_world, write_toy_config

from metrics import clip_image
from metrics.dinov2 import ARCHS, PROTOCOL
from metrics.extractors import _REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_CLIP = "clip-test-sweep"
NEW = ["fd_dinov2", "cmmd", "density", "coverage"]


def test_toy_sweep_with_metrics_beyond_inception(tmp_path, monkeypatch):
    from glide_eval.sweep.config import load_config
    from glide_eval.sweep.run import run_sweep
    from reports.build import build_report

    use_random_toy_world(tmp_path, monkeypatch)
    dino = make_random_dinov2(tmp_path / "dinov2_vits14_pretrain.pth", ARCHS["dinov2-vit-s-14"], 0)
    clip = make_random_clip(tmp_path / "tiny.pt", 56, 64, 2, 14, embed_dim=32, text=(64, 1, 1), seed=1)
    clip_image.register(TINY_CLIP, clip_image.Tower(56, 64, 2, 14))
    path = write_toy_config(
        tmp_path,
        respacing="3",
        rest=f"""[weights]
dinov2 = "{dino}"
clip_image = "{clip}"
[grid]
unguided = true
cfg = [3.0]
[metrics]
names = ["fid", "fd_dinov2", "cmmd", "density", "coverage"]
dinov2_extractor = "dinov2-vit-s-14"
clip_image_extractor = "{TINY_CLIP}"
reference_n = 16
ci = true
""",
    )
    try:
        config = load_config(path)
        run_sweep(config, progress=False, log=lambda m: None)
        df = pd.read_parquet(config.output_dir / "results.parquet")
        for m in ["fid", *NEW]:
            assert np.isfinite(df[m]).all(), m
            assert (df[f"{m}_ci_low"] <= df[m]).all() and (df[m] <= df[f"{m}_ci_high"]).all(), m
        with np.load(config.output_dir / "shards" / "cfg-3" / "00000.npz") as shard:
            assert shard["feat__dinov2_pool"].shape == (6, 384) and shard["feat__clip_pool"].shape == (6, 32)
        caches = sorted(p.name for p in (tmp_path / "cache").rglob("*.npz"))
        assert any("dinov2-vit-s-14" in c for c in caches) and any(TINY_CLIP in c for c in caches), caches
        assert any("sha256_dinov2" in c for c in df.columns), list(df.columns)
        paths = build_report(config.output_dir)
        html = paths["html"].read_text()
        assert "fd_dinov2" in html and "cmmd" in html
        from metrics.reference import ReferenceStats

        stats = ReferenceStats.load(next(p for p in (tmp_path / "cache").rglob("*dinov2-vit-s-14*.npz")))
        assert stats.meta["protocol"] == PROTOCOL and stats.meta["dc_k"] == 5 and stats.dc_radii.shape == (16,)
    finally:
        _REGISTRY.pop(TINY_CLIP, None)
