"""Sampling loops, guidance, inpainting, noise sources and the pipeline, on small stand-in models.

The stand-ins follow the GLIDE model API (encode_text, forward(x, t, text=..., low_res=...,
inpaint_image=..., inpaint_mask=...) -> (eps, v)); the real models are checked against the
reference in test_samplers_sampling_parity.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from samplers.diffusion import Diffusion
from samplers.guidance import classifier_free_model_fn, conditional_model_fn
from samplers.noise import PerSampleNoise, TapeNoise
from samplers.pipeline import GlideModels, InpaintSpec, quantize_low_res, sample_base, sample_images
from samplers.sampling import NanMonitor, Recorder, get_sampler, sample_ancestral, sample_ddim

pytestmark = pytest.mark.usefixtures("one_thread")

N_VOCAB = 16


def fake_tokenize(captions, text_ctx):
    tokens = torch.full((len(captions), text_ctx), N_VOCAB - 1, dtype=torch.long)
    mask = torch.zeros(len(captions), text_ctx, dtype=torch.bool)
    for row, caption in enumerate(captions):
        ids = [ord(c) % (N_VOCAB - 1) for c in caption][:text_ctx]
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = True
    return tokens, mask


class FakeGlide(torch.nn.Module):
    """A tiny text-conditional (eps, v) model with the GLIDE UNet's calling convention."""

    def __init__(self, inpaint=False, super_res=False, nan_token=None):
        super().__init__()
        torch.manual_seed(1)
        self.embed = torch.nn.Embedding(N_VOCAB, 6)
        self.conv = torch.nn.Conv2d(3 + (4 if inpaint else 0) + (3 if super_res else 0), 6, 3, padding=1)
        self.nan_token = nan_token
        self.encode_calls, self.batch_sizes = 0, []

    def encode_text(self, tokens, mask):
        self.encode_calls += 1
        return {"xf_proj": (self.embed(tokens) * mask[..., None]).sum(1), "tokens": tokens}

    def forward(
        self, x, timesteps, tokens=None, mask=None, *, text=None, low_res=None, inpaint_image=None, inpaint_mask=None
    ):
        if text is None:
            text = self.encode_text(tokens, mask)
        self.batch_sizes.append(x.shape[0])
        h = [x]
        if inpaint_image is not None:
            h += [inpaint_image, inpaint_mask]
        if low_res is not None:
            h.append(F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False))
        out = self.conv(torch.cat(h, 1)) + 0.3 * text["xf_proj"][:, :, None, None]
        out = out + (timesteps.float() / 1000)[:, None, None, None]
        eps, v = out.chunk(2, dim=1)
        if self.nan_token is not None:
            bad = (text["tokens"] == self.nan_token).any(1)[:, None, None, None]
            eps = torch.where(bad, torch.full_like(eps, float("nan")), eps)
        return torch.cat([eps, torch.tanh(v)], 1)


def point_mass_model_fn(x0, original_alphas_cumprod):
    """The exact eps predictor when the data is the single image x0 (needs ORIGINAL timesteps)."""

    def model_fn(x, t):
        abar = torch.as_tensor(original_alphas_cumprod, dtype=torch.float32)[t][:, None, None, None]
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1)

    return model_fn


def no_noise(like):
    raise AssertionError("this sampler must not draw noise")


@pytest.mark.parametrize("respacing", ["25", "fast27", "ddim10"])
def test_ddim_eta0_recovers_point_mass_deterministically(respacing):
    original = Diffusion.spaced("squaredcos_cap_v2", "")
    d = Diffusion.spaced("squaredcos_cap_v2", respacing)
    x0 = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    fn = point_mass_model_fn(x0, original.alphas_cumprod)
    x_t = torch.randn(2, 3, 8, 8)
    a = sample_ddim(fn, x_t.clone(), d, noise=no_noise)
    b = sample_ddim(fn, x_t.clone(), d, noise=no_noise)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0, rtol=1e-4, atol=1e-4)


def test_ancestral_recovers_point_mass_and_ddim_eta1_draws_noise():
    original = Diffusion.spaced("linear", "")
    d = Diffusion.spaced("linear", "50")
    x0 = torch.rand(1, 3, 8, 8) - 0.5
    fn = point_mass_model_fn(x0, original.alphas_cumprod)
    out = sample_ancestral(fn, torch.randn(1, 3, 8, 8), d, noise=PerSampleNoise(0, ["a"]))
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
    draws = []
    sample_ddim(fn, torch.randn(1, 3, 8, 8), d, eta=1.0, noise=lambda like: draws.append(1) or torch.randn_like(like))
    assert len(draws) == d.num_steps - 1  # no draw at the last step


def test_ancestral_step_is_mean_plus_std_noise_and_clip_guidance_shifts_mean():
    d = Diffusion.spaced("squaredcos_cap_v2", "10")
    model = FakeGlide()
    tokens, mask = fake_tokenize(["a cat"], 8)
    fn = conditional_model_fn(model, tokens, mask)
    x = torch.randn(1, 3, 8, 8)
    z = torch.randn(1, 3, 8, 8)
    grad = torch.randn(1, 3, 8, 8)
    seen_t = []

    def cond_fn(x_t, t):
        seen_t.append(t.tolist())
        return grad

    rec_plain, rec_guided = Recorder(), Recorder()
    sample_ancestral(fn, x.clone(), d, noise=TapeNoise([x] + [z] * 10), callback=rec_plain)
    sample_ancestral(fn, x.clone(), d, noise=TapeNoise([x] + [z] * 10), cond_fn=cond_fn, callback=rec_guided)
    out = d.mean_variance(fn(x, d.original_timesteps(9, 1, "cpu")), x, 9)
    torch.testing.assert_close(rec_plain.trajectory[0], out["mean"] + torch.exp(0.5 * out["log_variance"]) * z)
    torch.testing.assert_close(
        rec_guided.trajectory[0] - rec_plain.trajectory[0], out["variance"] * grad, rtol=1e-4, atol=1e-5
    )
    assert seen_t[0] == [d.timestep_map[9]] and seen_t[-1] == [0]  # original timesteps


def test_classifier_free_guidance_batches_once_and_encodes_text_once():
    model = FakeGlide()
    tokens, mask = fake_tokenize(["a red cube", "dog"], 8)
    empty_tokens, empty_mask = fake_tokenize(["", ""], 8)
    fn = classifier_free_model_fn(model, tokens, mask, empty_tokens, empty_mask, 3.0)
    sample_ancestral(fn, torch.randn(2, 3, 8, 8), Diffusion.spaced("squaredcos_cap_v2", "5"), noise=torch.randn_like)
    assert model.encode_calls == 1 and model.batch_sizes == [4] * 5

    x, t = torch.randn(2, 3, 8, 8), torch.tensor([500, 500])
    cond = conditional_model_fn(model, tokens, mask)(x, t)
    uncond = conditional_model_fn(model, empty_tokens, empty_mask)(x, t)
    guided = fn(x, t)
    torch.testing.assert_close(guided[:, :3], uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]))
    torch.testing.assert_close(guided[:, 3:], cond[:, 3:])  # variance from the conditional half


def test_guidance_scale_one_equals_conditional_sampling():
    model = FakeGlide()
    tokens, mask = fake_tokenize(["a red cube"], 8)
    empty_tokens, empty_mask = fake_tokenize([""], 8)
    d = Diffusion.spaced("squaredcos_cap_v2", "10")
    x = torch.randn(1, 3, 8, 8)
    guided = sample_ancestral(
        classifier_free_model_fn(model, tokens, mask, empty_tokens, empty_mask, 1.0),
        x.clone(),
        d,
        noise=PerSampleNoise(3, [0]),
    )
    plain = sample_ancestral(conditional_model_fn(model, tokens, mask), x.clone(), d, noise=PerSampleNoise(3, [0]))
    torch.testing.assert_close(guided, plain, rtol=1e-5, atol=1e-5)


def test_per_sample_noise_ignores_batch_mates():
    alone = PerSampleNoise(7, ["b"])
    crowd = PerSampleNoise(7, ["a", "b", "c"])
    assert torch.equal(alone.initial((1, 3, 4, 4))[0], crowd.initial((3, 3, 4, 4))[1])
    like = torch.zeros(1, 3, 4, 4)
    assert torch.equal(alone(like)[0], crowd(like.expand(3, -1, -1, -1))[1])
    assert not torch.equal(PerSampleNoise(8, ["b"]).initial((1, 3, 4, 4)), alone.initial((1, 3, 4, 4)))


def tiny_models(**kwargs):
    base = FakeGlide(**kwargs.pop("base_kwargs", {}))
    up = FakeGlide(super_res=True)
    return GlideModels(
        base=base,
        base_options={"image_size": 8, "text_ctx": 8},
        upsampler=up,
        upsampler_options={"image_size": 16, "text_ctx": 8},
        tokenize=fake_tokenize,
        **kwargs,
    )


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_sample_images_is_batch_invariant(sampler):
    captions, ids = ["a cat", "a dog", "a red car"], [10, 11, 12]
    models = tiny_models()
    kwargs = dict(guidance=("cfg", 3.0), respacing="8", sampler=sampler, upsample=True, eta=0.5)
    together = sample_images(models, captions, ids, seed=5, batch_size=3, **kwargs)
    one_by_one = sample_images(models, captions, ids, seed=5, batch_size=1, **kwargs)
    shuffled = sample_images(models, captions[::-1], ids[::-1], seed=5, batch_size=2, **kwargs)
    assert together.images.shape == (3, 3, 16, 16) and together.images.dtype == torch.uint8
    diff = (together.images.int() - one_by_one.images.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99  # same noise; only float rounding differs
    diff = (together.images.int() - shuffled.images.flip(0).int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    other_seed = sample_images(models, captions, ids, seed=6, batch_size=3, **kwargs)
    assert (together.images.int() - other_seed.images.int()).abs().float().mean() > 5
    assert together.nan_steps == [0, 0, 0] and together.nan_samples == []


def test_nan_samples_are_reported_by_id():
    bad_token = ord("!") % (N_VOCAB - 1)
    models = tiny_models(base_kwargs={"nan_token": bad_token})
    result = sample_images(
        models, ["fine", "bad!", "ok"], ["s0", "s1", "s2"], seed=0, guidance="none", respacing="4", batch_size=2
    )
    assert result.nan_samples == ["s1"]
    assert result.nan_steps[1] == 4 and result.nan_steps[0] == result.nan_steps[2] == 0


def test_nan_monitor_counts_per_sample():
    monitor = NanMonitor(2)
    x = torch.zeros(2, 3, 2, 2)
    x[1, 0, 0, 0] = float("inf")
    monitor({"x": x})
    monitor({"x": torch.zeros(2, 3, 2, 2)})
    assert monitor.counts.tolist() == [0, 1]


def assert_inpainting_keeps_the_known_region(inpaint_model: bool, **sampler):
    """sample_base (with `sampler`, e.g. sampler="plms") on a tiny inpainting model (or a plain one) given a
    random image whose left half is known keeps that half; returns the samples and the image."""
    models = tiny_models(base_kwargs={"inpaint": inpaint_model})
    models.base_options["inpaint"] = inpaint_model
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    x = sample_base(
        models,
        ["a cat", "grass"],
        PerSampleNoise(0, [0, 1]),
        guidance=("cfg", 2.0),
        respacing="6",
        inpaint=InpaintSpec(image, mask),
        **sampler,
    )
    torch.testing.assert_close(x[..., :4], image.expand(2, -1, -1, -1)[..., :4], rtol=1e-5, atol=1e-5)
    return x, image


@pytest.mark.parametrize("inpaint_model", [True, False])
def test_inpainting_keeps_known_region(inpaint_model):
    x, image = assert_inpainting_keeps_the_known_region(inpaint_model)
    assert (x[..., 4:] - image[..., 4:]).abs().mean() > 0.05


def test_quantized_low_res_is_on_the_8_bit_grid():
    q = quantize_low_res(torch.rand(2, 3, 4, 4) * 2 - 1)
    codes = (q + 1) * 127.5
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("euler")
    with pytest.raises(ValueError, match="unknown guidance"):
        sample_images(tiny_models(), ["x"], [0], seed=0, guidance=("classifier", 1.0), respacing="2")
    with pytest.raises(ValueError, match="sample ids"):
        sample_images(tiny_models(), ["x", "y"], [0, 0], seed=0, respacing="2")
    assert math.isfinite(Diffusion.spaced("linear", "2").betas.sum())


class FakeClip(torch.nn.Module):
    """Linear noised-CLIP stand-in: image features depend on x and the (original) timestep."""

    logit_scale = 100.0

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.text = torch.nn.Embedding(N_VOCAB, 5)
        self.image = torch.nn.Linear(3 * 8 * 8, 5)
        self.timesteps = []

    def text_embeddings(self, tokens, lens):
        return self.text(tokens).sum(1)

    def image_embeddings(self, x, t):
        self.timesteps.append(t)
        return self.image(x.flatten(1)) * (1 + t.float()[:, None] / 1000)


def assert_clip_guidance_changes_the_images(sampler):
    """CLIP guidance (scale 5) through sample_images moves the images by more than 1 level on average
    without NaNs; returns the models (their FakeClip recorded the timesteps it saw)."""
    models = tiny_models(
        clip=FakeClip(), clip_tokenize=lambda captions: (fake_tokenize(captions, 6)[0], torch.full((len(captions),), 6))
    )
    common = dict(respacing="5", sampler=sampler, batch_size=2)
    guided = sample_images(models, ["a cat", "a dog"], [0, 1], seed=1, guidance=("clip", 5.0), **common)
    plain = sample_images(models, ["a cat", "a dog"], [0, 1], seed=1, guidance=("none", 0), **common)
    assert guided.nan_samples == [] and (guided.images.int() - plain.images.int()).abs().float().mean() > 1
    return models


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_clip_guidance_through_the_pipeline(sampler):
    models = assert_clip_guidance_changes_the_images(sampler)
    diffusion = Diffusion.spaced("squaredcos_cap_v2", "5")
    assert [int(t[0]) for t in models.clip.timesteps] == diffusion.timestep_map[::-1]  # original timesteps
    with pytest.raises(ValueError, match="noised CLIP"):
        sample_images(tiny_models(), ["x"], [0], seed=0, guidance=("clip", 1.0), respacing="2")
