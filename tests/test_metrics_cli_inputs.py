"""Issue 19 items 7-8: `glide-eval metrics` refuses silent wrong numbers (resolution mismatch, a
--ref folder without the reference protocol, an unknown Inception file, too few images for the IS
splits); `sample --guidance cfg` without a scale is an error."""

import json
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glide_eval.cli import main
from glide_eval.data.coco import preprocess_image
from metrics import FeatureAccumulator, calculate_metrics, register_extractor
from metrics.extractors import INCEPTION, INCEPTION_SHA256_PREFIX, ExtractorError, check_known_weights
from metrics.reference import build_reference
from samplers.guidance_specs import parse_guidance


class _MeanStd:
    """Stand-in image extractor: per-channel mean and std, and logits from them."""

    kind, name, weights_sha256 = "image", "mean-std-test", "2" * 64

    def __call__(self, images):
        x = images.double() / 255
        pool = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1).float()
        return {"pool": pool, "logits_unbiased": pool * 5}


register_extractor("mean-std-test", lambda weights_path=None, device="cpu": _MeanStd())


def _cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def _folder(path, sizes, seed):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_resolution_mismatch_is_refused_unless_allowed(tmp_path):
    gen = _folder(tmp_path / "gen", [(8, 8)] * 12, 0)
    rng = np.random.default_rng(1)
    ref_images = torch.from_numpy(rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8))
    stats = build_reference([ref_images], _MeanStd(), {"resolution": 16})
    stats.save(tmp_path / "ref.npz")
    args = ["metrics", "--gen", gen, "--ref", tmp_path / "ref.npz", "--fid", "--extractor", "mean-std-test"]
    res = _cli(*args)
    assert res.exit_code == 1
    assert "the generated images are 8px but the reference was made at 16px" in res.output
    assert "--allow-resolution-mismatch" in res.output
    res = _cli(*args, "--allow-resolution-mismatch", "--json")
    assert res.exit_code == 0, res.output
    assert "warning: the generated images are 8px" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["provenance"]["warnings"] == [
        "the generated images are 8px but the reference was made at 16px; "
        "FID and precision/recall across resolutions measure the resize, "
        "not the model"
    ]
    stats.meta["resolution"] = 8  # same size: no complaint, same FID as allowed above
    stats.save(tmp_path / "ref8.npz")
    same = _cli(
        "metrics", "--gen", gen, "--ref", tmp_path / "ref8.npz", "--fid", "--extractor", "mean-std-test", "--json"
    )
    assert same.exit_code == 0 and json.loads(same.stdout)["fid"] == doc["fid"]


def test_ref_folder_gets_the_reference_protocol(tmp_path):
    raw_sizes = [(30, 50), (64, 40), (33, 33), (90, 70), (20, 45), (48, 48), (70, 30), (40, 41)]
    raw = _folder(tmp_path / "raw", raw_sizes, 2)
    gen = _folder(tmp_path / "gen", [(16, 16)] * 8, 3)
    res = _cli("metrics", "--gen", gen, "--ref", raw, "--fid", "--prc", "--extractor", "mean-std-test", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    # independently: the protocol applied image by image, then the metrics on the accumulated features
    ext = _MeanStd()
    ref_acc, gen_acc = FeatureAccumulator(ext), FeatureAccumulator(ext)
    for path in sorted(raw.iterdir()):
        ref_acc.add(torch.from_numpy(preprocess_image(Image.open(path), 16, "center"))[None])
    gen_acc.add(
        torch.from_numpy(np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in sorted(gen.iterdir())]))
    )
    expected = calculate_metrics(gen_acc, ref_acc, fid=True, isc=False, prc=True)
    assert got["fid"] == pytest.approx(expected["fid"], rel=1e-9)
    assert (got["precision"], got["recall"]) == (expected["precision"], expected["recall"])
    # --ref-resolution other than the samples': refused as a mismatch (the protocol recorded 24px)
    res = _cli("metrics", "--gen", gen, "--ref", raw, "--fid", "--extractor", "mean-std-test", "--ref-resolution", "24")
    assert res.exit_code == 1 and "reference was made at 24px" in res.output


def test_ref_folder_needs_a_resolution_when_samples_do_not_give_one(tmp_path):
    raw = _folder(tmp_path / "raw", [(30, 50)] * 4, 2)
    gen = _folder(tmp_path / "gen", [(16, 16), (16, 16), (8, 8), (8, 8)], 3)
    res = _cli("metrics", "--gen", gen, "--ref", raw, "--fid", "--extractor", "mean-std-test")
    assert res.exit_code == 2 and "--ref-resolution" in res.output


@pytest.mark.slow
def test_unknown_inception_file_refused_unless_allowed(tmp_path):  # ~6 s: builds and runs an Inception
    from model_files import make_random_inception

    weights = make_random_inception(tmp_path)
    gen = _folder(tmp_path / "gen", [(8, 8)] * 2, 0)
    args = ["metrics", "--gen", gen, "--isc", "--isc-splits", "2", "--inception-weights", weights]
    res = _cli(*args)
    assert res.exit_code == 1 and "not torch-fidelity's Inception weights" in res.output
    assert f"sha256 starts with {INCEPTION_SHA256_PREFIX}" in res.output and "--allow-unknown-inception" in res.output
    res = _cli(*args, "--allow-unknown-inception", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["is"] >= 1.0


def test_check_known_weights_accepts_the_known_prefix():
    known = types.SimpleNamespace(
        name=INCEPTION, weights_sha256=INCEPTION_SHA256_PREFIX + "0" * 56, weights_path="w.pth"
    )
    check_known_weights(known)
    other = types.SimpleNamespace(name=INCEPTION, weights_sha256="0" * 64, weights_path="w.pth")
    with pytest.raises(ExtractorError, match="w.pth: not torch-fidelity's"):
        check_known_weights(other)
    check_known_weights(_MeanStd())  # other extractors: nothing to check


def test_isc_splits(tmp_path):
    gen = _folder(tmp_path / "gen", [(8, 8)] * 5, 4)
    base = ["metrics", "--gen", gen, "--isc", "--extractor", "mean-std-test", "--json"]
    res = _cli(*base)
    assert res.exit_code == 1 and "5 generated images for 10 splits" in res.output and "--isc-splits" in res.output
    one_each = json.loads(_cli(*base, "--isc-splits", "5").stdout)
    assert one_each["is"] == pytest.approx(1.0, abs=1e-12) and one_each["is_std"] == pytest.approx(0.0, abs=1e-12)
    whole = json.loads(_cli(*base, "--isc-splits", "1").stdout)
    images = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in sorted(gen.iterdir())]) / 255
    pool = np.concatenate([images.mean(axis=(2, 3)), images.std(axis=(2, 3), ddof=1)], 1)
    logits = (pool * 5).astype(np.float32).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    kl = (p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1)
    assert whole["is"] == pytest.approx(np.exp(kl.mean()), rel=1e-5)
    assert _cli(*base, "--isc-splits", "0").exit_code == 2


def test_guidance_needs_a_scale():
    assert parse_guidance("cfg:3") == ("cfg", 3.0) and parse_guidance("clip:0.5") == ("clip", 0.5)
    assert parse_guidance("none") == parse_guidance("unguided") == ("none", 0.0)
    for spec in ("cfg", "clip", "cfg:", " clip : "):
        with pytest.raises(ValueError, match="needs a scale"):
            parse_guidance(spec)
    for spec, what in (
        ("cfg:abc", "not a number"),
        ("cfg:nan", "finite"),
        ("none:3", "takes no scale"),
        ("foo:1", "unknown guidance"),
    ):
        with pytest.raises(ValueError, match=what):
            parse_guidance(spec)


def test_sample_guidance_cfg_without_scale_is_a_usage_error(tmp_path):
    res = _cli("sample", "--prompt", "x", "--guidance", "cfg", "--random-weights", "--out", tmp_path / "x.png")
    assert res.exit_code == 2 and "needs a scale" in res.output
    assert not (tmp_path / "x.png").exists()
