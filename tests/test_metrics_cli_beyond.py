"""`glide-eval metrics --names fd_dinov2,cmmd,density,coverage --dinov2-weights F --clip-weights F --ci`
offline, with official-format weight files of random weights; the images are decoded once for
every extractor; the values equal `calculate_metrics` on the extractors' own features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glide_eval.cli import main
from metrics import FeatureSets, calculate_metrics, clip_image, create_extractor, dinov2
from metrics.dinov2 import ARCHS
from metrics.extractors import _REGISTRY
from metrics.testing import make_random_clip, make_random_dinov2

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = "fd_dinov2,cmmd,density,coverage"
TINY_CLIP = "clip-test-tiny"


def folder(path, seed: int, n: int = 10, size: int = 32):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def batch(path) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted(path.glob("*.png"))])).permute(
        0, 3, 1, 2
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("beyond")
    clip_image.register(TINY_CLIP, clip_image.Tower(56, 64, 2, 14))
    try:
        yield {
            "dinov2": make_random_dinov2(base / "dinov2_vits14_pretrain.pth", ARCHS["dinov2-vit-s-14"], 1),
            "clip": make_random_clip(base / "tiny.pt", 56, 64, 2, 14, embed_dim=32, text=(64, 1, 1), seed=2),
            "gen": folder(base / "gen", 0),
            "ref": folder(base / "ref", 1, n=12),
        }
    finally:
        _REGISTRY.pop(TINY_CLIP, None)


def test_metrics_cli_new_names_offline_equal_calculate_metrics(files, monkeypatch):
    calls = []
    real_reader = __import__("glide_eval.data.inputs", fromlist=["read_rgb_chw"]).read_rgb_chw

    def counting(path):
        calls.append(path)
        return real_reader(path)

    monkeypatch.setattr("glide_eval.data.inputs.read_rgb_chw", counting)
    args = ["metrics", "--gen", files["gen"], "--ref", files["ref"], "--names", NAMES, "--ci", "--json"]
    args += ["--dinov2-weights", files["dinov2"], "--clip-weights", files["clip"]]
    args += ["--dinov2-extractor", "dinov2-vit-s-14", "--clip-image-extractor", TINY_CLIP]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert len(calls) == 10  # the generated images decoded once for both extractors (--ref: its own protocol)

    dino = create_extractor("dinov2-vit-s-14", files["dinov2"])
    clip = create_extractor(TINY_CLIP, files["clip"])
    sides = []
    for key in ("gen", "ref"):
        sets = FeatureSets.of({"dinov2": dino, "clip": clip})
        sets.add(batch(files[key]))
        sides.append(sets)
    want = calculate_metrics(*sides, names=NAMES.split(","), ci=True)
    for m in NAMES.split(","):
        for suffix in ("", "_se", "_ci_low", "_ci_high"):
            assert got[m + suffix] == pytest.approx(want[m + suffix], rel=1e-6, abs=1e-9), m + suffix
    prov = got["provenance"]["gen"]
    assert prov["dinov2"]["protocol"] == dinov2.PROTOCOL and prov["clip"]["extractor"] == TINY_CLIP
    assert prov["dinov2"]["extractor_sha256"] == dino.weights_sha256


def test_metrics_cli_refuses_a_missing_or_wrong_file(files, monkeypatch):
    monkeypatch.delenv("GLIDE_EVAL_DINOV2", raising=False)
    args = ["metrics", "--gen", str(files["gen"]), "--ref", str(files["ref"]), "--names", "fd_dinov2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "GLIDE_EVAL_DINOV2" in result.output
    result = CliRunner().invoke(main, [*args, "--dinov2-weights", str(files["dinov2"])])  # ViT-S file, ViT-L asked
    assert result.exit_code != 0 and "not dinov2-vit-l-14" in result.output


@pytest.mark.slow
def test_metrics_cli_with_full_size_default_extractors(files, tmp_path):
    """The "Done when" command exactly: ViT-L/14 DINOv2 and CLIP ViT-L/14@336 files (random weights,
    1.2 GB and 1.7 GB)."""
    dino = make_random_dinov2(tmp_path / "dinov2_vitl14_pretrain.pth", ARCHS["dinov2-vit-l-14"], 0)
    clip = make_random_clip(tmp_path / "ViT-L-14-336px.pt")
    args = ["metrics", "--gen", files["gen"], "--ref", files["ref"], "--names", NAMES, "--ci", "--json"]
    args += ["--dinov2-weights", dino, "--clip-weights", clip]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    for m in NAMES.split(","):
        assert np.isfinite(got[m]) and got[f"{m}_ci_low"] <= got[m] <= got[f"{m}_ci_high"]
    assert got["provenance"]["gen"]["clip"]["extractor"] == "clip-vit-l-14-336"
