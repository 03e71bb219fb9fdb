"""The two-stage GLIDE pipeline: base 64x64 (guided) -> quantized low_res -> upsampler (fast27 DDIM).

`sample_images(models, captions, sample_ids, seed, ...)` is the high-level entry point: it
returns uint8 images plus, per sample, the number of steps that produced non-finite values.
Each sample's noise comes from (seed, sample id), so a sample does not depend on batch size,
batch-mates or the number of processes. Inpainting goes through the same function
(`inpaint=InpaintSpec(image, mask)`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from samplers.checkpoints import load_glide_model, load_noised_clip
from samplers.diffusion import Diffusion
from samplers.guidance import classifier_free_model_fn, clip_cond_fn, conditional_model_fn
from samplers.guidance_specs import parse_guidance
from samplers.inpaint import inpaint_model_kwargs, known_region_denoised_fn, replacement_post_step, upsample_mask
from samplers.model_configs import create_model, create_noised_clip, official_clip_config, official_options
from samplers.noise import PerSampleNoise
from samplers.sampling import NanMonitor, sample_ddim, sampler_record, split_sampler_options
from samplers.schedules import GridWarning, capped_start_advice
from samplers.tokenizers import clip_tokenize, glide_tokenize


@dataclass
class GlideModels:
    """The models of one pipeline and how to tokenize for them.

    `base_options` / `upsampler_options` are the create_model options (image_size, text_ctx,
    inpaint, ...). `tokenize(captions, text_ctx) -> (tokens, mask)` and
    `clip_tokenize(captions) -> (tokens, lens)` default to the GLIDE / noised-CLIP tokenizers.
    """

    base: torch.nn.Module
    base_options: dict
    upsampler: torch.nn.Module | None = None
    upsampler_options: dict | None = None
    clip: torch.nn.Module | None = None
    tokenize: Callable | None = None
    clip_tokenize: Callable | None = None
    sha256: dict = field(default_factory=dict)

    def glide_tokens(self, captions: Sequence[str], text_ctx: int, device):
        tokenize = self.tokenize or glide_tokenize
        tokens, mask = tokenize(list(captions), text_ctx=text_ctx)
        return torch.as_tensor(tokens, device=device), torch.as_tensor(mask, device=device).bool()

    def clip_tokens(self, captions: Sequence[str], device):
        tokenize = self.clip_tokenize or clip_tokenize
        tokens, lens = tokenize(list(captions))
        return torch.as_tensor(tokens, device=device), torch.as_tensor(lens, device=device)


@dataclass
class InpaintSpec:
    """Image in [-1, 1] ([1 or N, 3, H, W], any size) and mask at the BASE resolution (1 = known)."""

    image: torch.Tensor
    mask: torch.Tensor


@dataclass
class SampleResult:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    sample_ids: list
    nan_steps: list[int]  # per sample: steps whose output had a non-finite value (base + upsampler)

    @property
    def nan_samples(self) -> list:
        """Sample ids whose sampling produced non-finite values (their images are not valid)."""
        return [sid for sid, count in zip(self.sample_ids, self.nan_steps) if count > 0]


def quantize_low_res(x: torch.Tensor) -> torch.Tensor:
    """Round a [-1, 1] image to its 8-bit value, as the upsampler's low_res input."""
    return ((x + 1) * 127.5).round() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float image -> uint8 (non-finite values become 0; they are reported separately)."""
    x = torch.nan_to_num(x.float(), nan=-1.0, posinf=1.0, neginf=-1.0)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


def _keep_known_region(inpaint: InpaintSpec | None, model_options: dict, n: int, diffusion: Diffusion, noise, device):
    """(model kwargs, denoised_fn, post_step) that keep `inpaint`'s known region in a stage's `n`
    samples at its image_size: the fine-tuned inpainting models take the known region as input and
    have it pasted into each x0; the others have it put back (noised to the step) after each step."""
    if inpaint is None:
        return {}, None, None
    size = int(model_options["image_size"])
    image = _resize(inpaint.image.to(device).float(), size).expand(n, -1, -1, -1)
    known = upsample_mask(inpaint.mask.to(device), size).expand(n, -1, -1, -1)
    if model_options.get("inpaint"):
        return inpaint_model_kwargs(image, known), known_region_denoised_fn(image, known), None
    return {}, None, replacement_post_step(image, known, diffusion, noise)


def sample_base(
    models: GlideModels,
    captions: Sequence[str],
    noise,
    *,
    guidance=("cfg", 3.0),
    respacing="100",
    sampler="ancestral",
    eta: float = 0.0,
    sampler_options: dict | None = None,
    inpaint: InpaintSpec | None = None,
    device="cpu",
    autocast: torch.dtype | None = None,
    callback=None,
    progress=False,
) -> torch.Tensor:
    """Sample the base model for `captions` (one row each); returns x_0 in [-1, 1], float32.

    `sampler_options` are the sampler's options (its record's in samplers.sampling.SAMPLERS, e.g.
    {"order": 3} for "unipc", and the grid option `lambda_min` of every sampler), validated before any
    model call; `eta` is ddim's (also accepted there).
    """
    kind, scale = parse_guidance(guidance)
    record = sampler_record(sampler)
    options = dict(sampler_options or {})
    if sampler == "ddim":
        options.setdefault("eta", eta)
    options, grid_options = split_sampler_options(sampler, options)
    base_options = models.base_options
    n, size = len(captions), int(base_options["image_size"])
    schedule = base_options.get("noise_schedule", "squaredcos_cap_v2")
    diffusion = Diffusion.spaced(schedule, respacing, **grid_options)
    if diffusion.num_steps < record.min_steps(options):
        raise ValueError(
            f"sampler {sampler!r} needs a respacing of at least {record.min_steps(options)} steps; "
            f"respacing {respacing!r} has {diffusion.num_steps}"
        )
    if record.multistep:
        advice = capped_start_advice(schedule, diffusion.timestep_map)
        if advice:
            warnings.warn(f"sampler {sampler!r} on respacing {respacing!r}: {advice}", GridWarning, stacklevel=2)
    tokens, mask = models.glide_tokens(captions, int(base_options["text_ctx"]), device)

    model_kwargs, denoised_fn, post_step = _keep_known_region(inpaint, base_options, n, diffusion, noise, device)

    cond_fn = None
    if kind == "cfg":
        uncond_tokens, uncond_mask = models.glide_tokens([""] * n, int(base_options["text_ctx"]), device)
        model_fn = classifier_free_model_fn(
            models.base, tokens, mask, uncond_tokens, uncond_mask, scale, autocast=autocast, **model_kwargs
        )
    else:
        model_fn = conditional_model_fn(models.base, tokens, mask, autocast=autocast, **model_kwargs)
        if kind == "clip":
            if models.clip is None:
                raise ValueError("CLIP guidance needs the noised CLIP model (models.clip is None)")
            clip_tokens, clip_lens = models.clip_tokens(captions, device)
            cond_fn = clip_cond_fn(models.clip, clip_tokens, clip_lens, scale)

    x = noise.initial((n, 3, size, size), device)
    return record.loop(
        model_fn,
        x,
        diffusion,
        noise=noise,
        cond_fn=cond_fn,
        clip_denoised=True,
        denoised_fn=denoised_fn,
        post_step=post_step,
        callback=callback,
        progress=progress,
        **options,
    )


def sample_upsample(
    models: GlideModels,
    captions: Sequence[str],
    low_res: torch.Tensor,
    noise,
    *,
    respacing="fast27",
    temperature: float = 0.997,
    inpaint: InpaintSpec | None = None,
    device="cpu",
    autocast: torch.dtype | None = None,
    callback=None,
    progress=False,
) -> torch.Tensor:
    """Upsample base samples (in [-1, 1]) with DDIM (eta 0) from noise * temperature."""
    if models.upsampler is None:
        raise ValueError("upsampling needs the upsampler model (models.upsampler is None)")
    options = models.upsampler_options
    n, size = len(captions), int(options["image_size"])
    tokens, mask = models.glide_tokens(captions, int(options["text_ctx"]), device)
    diffusion = Diffusion.spaced(options.get("noise_schedule", "linear"), respacing)
    inpaint_kwargs, denoised_fn, post_step = _keep_known_region(inpaint, options, n, diffusion, noise, device)
    model_kwargs = {"low_res": quantize_low_res(low_res), **inpaint_kwargs}
    model_fn = conditional_model_fn(models.upsampler, tokens, mask, autocast=autocast, **model_kwargs)
    x = noise.initial((n, 3, size, size), device) * temperature
    return sample_ddim(
        model_fn,
        x,
        diffusion,
        noise=noise,
        clip_denoised=True,
        denoised_fn=denoised_fn,
        post_step=post_step,
        callback=callback,
        progress=progress,
    )


def convert_models(models: GlideModels, dtype: torch.dtype) -> GlideModels:
    """Run the UNets in `dtype` (float16 / bfloat16), converted once with `GLIDEUNet.to_dtype`:
    convolutions, the text transformer and its token embedding in `dtype`; norms, the timestep
    MLP, embedding projections, positional embeddings and the output head float32, as the
    reference's `convert_to_fp16` keeps them. The noised CLIP stays float32 (the reference
    converts only the UNets). float32: unchanged."""
    if dtype != torch.float32:
        for model in (models.base, models.upsampler):
            if model is not None and model.dtype != dtype:
                model.to_dtype(dtype)
    return models


def _autocast_for(model, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype a model needs to compute in `dtype`: None when it already does."""
    if dtype == torch.float32 or model is None or getattr(model, "dtype", torch.float32) == dtype:
        return None
    return dtype


def sample_images(
    models: GlideModels,
    captions: Sequence[str],
    sample_ids: Sequence,
    seed: int,
    *,
    guidance=("cfg", 3.0),
    respacing="100",
    sampler="ancestral",
    eta: float = 0.0,
    sampler_options: dict | None = None,
    upsample: bool = False,
    upsample_respacing="fast27",
    upsample_temp: float = 0.997,
    inpaint: InpaintSpec | None = None,
    batch_size: int = 8,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> SampleResult:
    """Generate one image per (caption, sample id): uint8 [N, 3, H, W] and a per-sample NaN report.

    Sample i's noise depends only on (seed, sample_ids[i]) (streams "base" and "upsample"),
    so results are the same whatever the batch size or sharding. `dtype` float16/bfloat16:
    models converted with `convert_models(models, dtype)` run in it as they are; float32 ones
    run under autocast (every step re-casts their weights: convert them once instead).
    """
    captions, sample_ids = list(captions), list(sample_ids)
    if len(captions) != len(sample_ids):
        raise ValueError(f"{len(captions)} captions but {len(sample_ids)} sample ids")
    if len(set(map(str, sample_ids))) != len(sample_ids):
        raise ValueError("sample ids must be unique (each one seeds its own noise)")
    autocast = _autocast_for(models.base, dtype)
    upsample_autocast = _autocast_for(models.upsampler, dtype)
    images, nan_steps = [], []
    batches = range(0, len(captions), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="batches")
    for start in batches:
        caps, ids = captions[start : start + batch_size], sample_ids[start : start + batch_size]
        monitor = NanMonitor(len(caps), device)
        x = sample_base(
            models,
            caps,
            PerSampleNoise(seed, ids, "base"),
            guidance=guidance,
            respacing=respacing,
            sampler=sampler,
            eta=eta,
            sampler_options=sampler_options,
            inpaint=inpaint,
            device=device,
            autocast=autocast,
            callback=monitor,
        )
        if upsample:
            x = sample_upsample(
                models,
                caps,
                x,
                PerSampleNoise(seed, ids, "upsample"),
                respacing=upsample_respacing,
                temperature=upsample_temp,
                inpaint=inpaint,
                device=device,
                autocast=upsample_autocast,
                callback=monitor,
            )
        images.append(to_uint8(x).cpu())
        nan_steps.extend(monitor.counts.cpu().tolist())
    return SampleResult(
        torch.cat(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8), sample_ids, nan_steps
    )


def inpaint_images(
    models: GlideModels,
    captions: Sequence[str],
    image: torch.Tensor,
    mask: torch.Tensor,
    sample_ids: Sequence,
    seed: int,
    **kwargs,
) -> SampleResult:
    """sample_images with the known region (mask = 1, base resolution) of `image` kept."""
    return sample_images(models, captions, sample_ids, seed, inpaint=InpaintSpec(image, mask), **kwargs)


# -- building the models --------------------------------------------------------------


# Small stand-ins for the official configs (same structure, seconds on a CPU); base 16px -> 64px.
def _tiny_unet(image_size: int, channel_mult: str) -> dict:
    """The tiny UNet widths both stages share, at one stage's resolution."""
    return dict(
        image_size=image_size,
        num_channels=32,
        num_res_blocks=1,
        channel_mult=channel_mult,
        attention_resolutions="8",
        num_head_channels=16,
        xf_width=32,
        xf_layers=1,
        xf_heads=2,
        text_ctx=16,
    )


TINY_OVERRIDES = {
    "base": _tiny_unet(16, "1,2"),
    "upsample": _tiny_unet(64, "1,1,2,2"),
    "clip": dict(
        image_size=16,
        patch_size=4,
        n_embd=32,
        n_head_text=2,
        n_head_image=2,
        n_head_state_text=16,
        n_head_state_image=16,
        n_xf_blocks_text=1,
        n_xf_blocks_image=1,
    ),
}


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (no zero-initialised output layer), ~N(0, 1/fan_in); norm gains ~1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)
            elif name.endswith("weight"):  # 1-D weights are normalisation gains
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def load_glide_models(
    checkpoint_dir=None,
    *,
    upsample: bool = False,
    clip: bool = False,
    inpaint: bool = False,
    random_weights: bool = False,
    tiny: bool = False,
    seed: int = 0,
    device="cpu",
    channels_last: bool = False,
) -> GlideModels:
    """The pipeline's models: released checkpoints from `checkpoint_dir` (or $GLIDE_CHECKPOINTS), or,
    with `random_weights`, the official configs (or `tiny` stand-ins) with random weights.

    `channels_last` stores the UNets' weights channels-last (faster convolutions on CPU oneDNN;
    outputs agree with the default layout to float rounding, see bench/sampler.py)."""
    names = {"base": "base-inpaint" if inpaint else "base", "upsample": "upsample-inpaint" if inpaint else "upsample"}
    stages = ["base"] + (["upsample"] if upsample else [])
    models, options, sha256 = {}, {}, {}
    for offset, stage in enumerate(stages):
        opts = dict(official_options(names[stage]))
        if random_weights:
            if tiny:
                opts.update(TINY_OVERRIDES[stage])
            model = create_model(opts)
            _randomize(model, seed + offset)
            sha256[names[stage]] = "random"
        else:
            if tiny:
                raise ValueError("tiny configs exist only with random weights")
            model, sha256[names[stage]] = load_glide_model(names[stage], checkpoint_dir, device=device)
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        models[stage], options[stage] = model, opts
    clip_model = None
    if clip:
        if random_weights:
            config = official_clip_config()
            if tiny:
                config.update(TINY_OVERRIDES["clip"])
            clip_model = create_noised_clip(config)
            _randomize(clip_model, seed + len(stages))
            sha256["clip"] = "random"
        else:
            clip_model, clip_sha = load_noised_clip(checkpoint_dir, device=device)
            sha256.update(clip_sha)
        clip_model = clip_model.to(device).eval()
    return GlideModels(
        base=models["base"],
        base_options=options["base"],
        upsampler=models.get("upsample"),
        upsampler_options=options.get("upsample"),
        clip=clip_model,
        sha256=sha256,
    )
