"""The shipped toy models (glide_eval/assets): manifest integrity, evaluation networks far
above chance on fresh validation scenes, extractor registration, and the trained generators."""

import json

import numpy as np
import pytest
import torch

from glide_eval.toy import models as M
from glide_eval.toy.world import ATTRIBUTES, dataset, parse_caption

CHANCE = {name: 1 / len(values) for name, values in ATTRIBUTES.items()}
# fresh validation scenes (the training metrics in the manifest use indices 0..499)
START, N = 5000, 300


def _have(*names):
    try:
        for name in names:
            M.weight_path(name)
    except FileNotFoundError as e:
        return pytest.mark.skip(reason=str(e))
    return lambda test: test


@pytest.fixture(scope="module")
def validation():
    images, captions, labels = dataset(N, "validation", 32, start=START)
    return torch.from_numpy(images), captions, labels


def test_manifest_matches_shipped_files():
    manifest = json.loads((M.ASSETS / "manifest.json").read_text())
    total = 0
    for name, entry in manifest["files"].items():
        path = M.ASSETS / name
        assert M.sha256_file(path) == entry["sha256"], name
        assert path.stat().st_size == entry["bytes"]
        assert (M.ASSETS / entry["log"]).is_file()
        assert entry["config"]["steps"] > 0 and "torch" in entry["versions"]
        total += entry["bytes"]
    assert {"classifier.pt", "clip.pt"} <= set(manifest["files"])
    assert total <= 10 * 2**20
    assert manifest["seed"] == 0


@_have("classifier")
def test_classifier_far_above_chance(validation):
    from metrics.extractors import create_extractor

    images, _, labels = validation
    extractor = create_extractor("toy-classifier")
    assert extractor.kind == "image" and extractor.name == "toy-classifier"
    assert extractor.weights_sha256 == M.sha256_file(M.weight_path("classifier"))
    pred = extractor.predict(images)
    acc = {k: float((pred[k].numpy() == labels[k]).mean()) for k in ATTRIBUTES}
    # measured (manifest, validation 0..499): shape 0.982, size 0.994, count 0.994, colour and background 1.0
    for k in ATTRIBUTES:
        assert acc[k] > 0.9, (k, acc)
    # the extractor interface: features for FID / IS, any image size
    out = extractor(images[:10])
    assert out["pool"].shape == (10, extractor.dims["pool"]) and out["pool"].dtype == torch.float32
    assert out["logits_unbiased"].shape == (10, extractor.dims["logits_unbiased"])
    big = torch.from_numpy(dataset(10, "validation", 64, start=START)[0])
    assert torch.allclose(extractor(big)["pool"], out["pool"], atol=0.5 * float(out["pool"].std()))
    with pytest.raises(Exception, match="uint8"):
        extractor(images[:2].float())


@_have("clip")
def test_toy_clip_retrieval_above_chance(validation):
    from metrics.extractors import create_extractor

    images, captions, labels = validation
    clip = create_extractor("toy-clip")
    assert clip.kind == "clip" and clip.name == "toy-clip"
    img = torch.nn.functional.normalize(clip.encode_images(images), dim=-1)
    txt, truncated = clip.encode_text(captions)
    assert truncated == 0 and txt.shape == img.shape
    txt = torch.nn.functional.normalize(txt, dim=-1)
    key = np.stack([labels[k] for k in ATTRIBUTES], 1)
    same = (key[:, None] == key[None]).all(-1)
    best = (img @ txt.t()).argmax(1).numpy()
    top1 = same[np.arange(N), best].mean()
    chance = same.mean()
    assert top1 > max(0.2, 5 * chance), (top1, chance)
    # matched pairs score higher than mismatched ones on average (CLIP score)
    cos = (img * txt).sum(1)
    assert float(cos.mean()) > float((img * txt.roll(1, 0)).sum(1).mean()) + 0.05


@pytest.fixture(scope="module")
def unguided():
    """Per attribute, the fraction of 128 unguided base samples (DDIM, 10 steps, as the default
    sweep samples) in which the evaluation classifier sees what the caption names."""
    from glide_eval.toy import load_toy_models, sample_captions
    from metrics.extractors import create_extractor
    from samplers.pipeline import sample_images

    models = load_toy_models()
    captions = sample_captions(128, seed=3)
    result = sample_images(
        models, captions, list(range(128)), seed=0, guidance="none", respacing="10", sampler="ddim", batch_size=128
    )
    assert result.images.shape == (128, 3, M.BASE_RESOLUTION, M.BASE_RESOLUTION) and not result.nan_samples
    pred = create_extractor("toy-classifier").predict(result.images)
    wanted = [parse_caption(c) for c in captions]
    return {k: float(np.mean([int(pred[k][i]) == w[k] for i, w in enumerate(wanted)])) for k in ATTRIBUTES}


@_have("base", "classifier")
def test_unguided_samples_match_caption_attributes(unguided):
    # measured on these 128 captions: colour 0.938, background 0.867, size 0.898, count 0.836, shape 0.562
    # (real images: shape 0.98, the others ~1.0)
    for k, factor in (("colour", 5.0), ("background", 4.0), ("size", 1.7), ("count", 2.25), ("shape", 2.0)):
        assert unguided[k] > factor * CHANCE[k], (k, unguided)


@_have("noised_clip")
def test_noised_clip_retrieves_captions_of_slightly_noised_images(validation):
    from glide_eval.toy.tokenizer import clip_tokenize
    from glide_eval.toy.train import DiffusionTables

    images, captions, labels = validation
    clip, _, config = M.load("noised_clip")
    size = config["image_size"]
    x0 = torch.nn.functional.avg_pool2d(images.float() / 127.5 - 1, 32 // size)
    tables = DiffusionTables(config["beta_schedule"], config["n_timesteps"])
    t = torch.full((N,), 100)
    with torch.no_grad():
        x_t = tables.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
        img = torch.nn.functional.normalize(clip.image_embeddings(x_t, t), dim=-1)
        tokens, lens = clip_tokenize(captions)
        txt = torch.nn.functional.normalize(clip.text_embeddings(tokens, lens), dim=-1)
    key = np.stack([labels[k] for k in ATTRIBUTES], 1)
    same = (key[:, None] == key[None]).all(-1)
    top1 = same[np.arange(N), (img @ txt.t()).argmax(1).numpy()].mean()
    assert top1 > 5 * same.mean(), (top1, same.mean())
    # its guidance gradient has the image's shape and is finite
    grad = clip.guidance_grad(x_t[:4], t[:4], txt[:4], 1.0)
    assert grad.shape == x_t[:4].shape and torch.isfinite(grad).all()


def _upsample(validation, temperature):
    """(32x32 samples of the shipped upsampler at `temperature`, the 32x32 originals, their 16x16 low_res)."""
    from glide_eval.toy import load_toy_models
    from samplers.noise import GlobalNoise
    from samplers.pipeline import sample_upsample

    images, captions, _ = validation
    x = images[:32].float() / 127.5 - 1
    low = torch.nn.functional.avg_pool2d(x, 2)
    models = load_toy_models(upsample=True)
    with torch.no_grad():
        out = sample_upsample(
            models, captions[:32], low, GlobalNoise(torch.Generator().manual_seed(0)), temperature=temperature
        )
    assert out.shape == (32, 3, 32, 32) and torch.isfinite(out).all()
    return out, x, low


@_have("upsample")
def test_upsampler_follows_the_low_resolution_input_at_glides_temperature(validation):
    """At GLIDE's upsample temperature its samples, area-downsampled to 16x16, stay near low_res:
    the upsampler shipped before `_upsampler_shift` kept the layout but took its colours from
    its first steps' noise (pooled MAE 0.66 on these scenes; the shipped one: 0.18)."""
    out, _, low = _upsample(validation, 0.997)
    assert float((torch.nn.functional.avg_pool2d(out, 2) - low).abs().mean()) < 0.3


@_have("upsample")
def test_upsampler_keeps_the_low_resolution_content(validation):
    """At the toy upsampler's temperature its samples, area-downsampled back to 16x16, match
    their low_res input (8-bit rounding and sampling noise aside) and the originals (measured:
    pooled MAE 0.036, full MAE 0.044; at 0.997: 0.18, 0.19)."""
    out, x, low = _upsample(validation, M.UPSAMPLE_TEMPERATURE)
    assert (torch.nn.functional.avg_pool2d(out, 2) - low).abs().mean() < 0.05
    assert (out - x).abs().mean() < 0.1
