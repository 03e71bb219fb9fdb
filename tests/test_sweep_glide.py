"""The `glide` engine end to end on made-up files in the official formats: tiny random-weight
GLIDE models (64 -> 256 path), a random-weight Inception file, a tiny OpenAI-format CLIP
and a small MS-COCO folder. Slow on a CPU (Inception at 299x299), so marked slow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import torchvision_compat  # noqa: F401  (conftest.py calls ensure_torchvision() first)
from glide_eval.sweep.config import load_config
from glide_eval.sweep.run import run_sweep

pytestmark = pytest.mark.slow


def make_coco(root, n_images=12):
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    images, anns = [], []
    for i in range(n_images):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48 + i, 64, 3), dtype=np.uint8)).save(root / "val2014" / name)
        images.append({"id": i, "file_name": name})
        anns += [{"id": 100 + 2 * i + j, "image_id": i, "caption": f"photo {i} of thing {j}"} for j in range(2)]
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))


def test_glide_engine_end_to_end(tmp_path, monkeypatch):
    from model_files import make_random_inception, make_tiny_clip

    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    make_coco(tmp_path / "coco")
    inception = make_random_inception(tmp_path)
    clip = make_tiny_clip(tmp_path / "clip.pt")
    path = tmp_path / "sweep.toml"
    path.write_text(f"""
[run]
output_dir = "{tmp_path / "out"}"
batch_size = 5
shard_size = 5
device = "cpu"
[models]
engine = "glide"
[weights]
inception = "{inception}"
allow_unknown_inception = true  # random weights stand in for torch-fidelity's file
clip = "{clip}"
[sampler]
resolution = 256
base_respacing = "3"
upsample_respacing = "2"
[captions]
source = "coco"
path = "{tmp_path / "coco"}"
n = 10
[grid]
unguided = false
cfg = [1.5]
[metrics]
reference = "{tmp_path / "reference.npz"}"
[engine_options]
random_weights = true
tiny = true
""")
    config = load_config(path)
    run_sweep(config, progress=False, log=lambda m: None)
    row = pd.read_parquet(config.output_dir / "results.parquet").iloc[0]
    assert row["setting"] == "cfg-1.5" and row["n_samples"] == 10 and row["n_ref"] == 12
    for metric in ("fid", "is", "precision", "recall", "clip_score"):
        assert np.isfinite(row[metric]), metric
    assert len(row["sha256_inception"]) == 64 and len(row["sha256_clip_vit_b16"]) == 64
    assert len(row["reference_images_sha256"]) == 64 and isinstance(row["n_ref"], (int, np.integer))
    assert (tmp_path / "reference.npz").is_file()
    captions = json.loads((config.output_dir / "captions.json").read_text())
    assert all(c.startswith("photo ") for c in captions) and len(set(captions)) == 10
    # resumed: nothing is sampled again and the results stand
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0
