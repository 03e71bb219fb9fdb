"""Benchmark: base-64 classifier-free sampling at the official configuration (random weights).

Times our ancestral loop per step and per sample, counts FLOPs (torch.utils.flop_counter)
to report GFLOP/s, profiles one step (conv / attention / matmul / norm shares, and the text
transformer's cost), and, when the reference `glide_text2im` is importable (put a checkout on
PYTHONPATH; it is never a dependency), runs the reference loop on the same weights, tokens and
noise in the same process, checks the outputs agree and reports the samples/s ratio.

    .venv/bin/python bench/sampler.py --steps 3 --batch 1            # CPU float32
    .venv/bin/python bench/sampler.py --device cuda --dtype bfloat16 --compile --steps 20 --batch 8
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import torch
from printing import print_report
from torch.utils.flop_counter import FlopCounterMode

from samplers.diffusion import Diffusion
from samplers.guidance import classifier_free_model_fn
from samplers.noise import TapeNoise
from samplers.sampling import sample_ancestral

CAPTION = "a corgi wearing a red bowtie and a purple party hat"
GUIDANCE = 3.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="sampling steps (respacing of the 1000-step schedule)")
    parser.add_argument("--batch", type=int, default=1, help="captions per batch (the model sees 2x for guidance)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="autocast dtype for the model (sampling arithmetic stays float32)",
    )
    parser.add_argument(
        "--convert",
        action="store_true",
        help="ours: weights converted once to --dtype (GLIDEUNet.to_dtype, as the sweep does) instead of autocast",
    )
    parser.add_argument(
        "--reference-fp16",
        action="store_true",
        help="the reference with use_fp16=True (its convert_to_fp16), as glide-text2im runs on a GPU",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (ours only)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last UNet weights (ours only)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference implementation")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs of each implementation, alternating (the fastest counts)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_ours(device):
    from samplers.model_configs import create_model, official_options
    from samplers.pipeline import _randomize

    options = dict(official_options("base"))
    model = create_model(options)
    _randomize(model, seed=0)
    return model.to(device).eval(), options


def build_reference(options, state_dict, device, fp16: bool = False):
    """The reference Text2ImUNet with our weights, or None when glide_text2im is not importable."""
    try:
        from glide_text2im.model_creation import create_model_and_diffusion, model_and_diffusion_defaults
    except ImportError:
        return None, None
    ref_options = model_and_diffusion_defaults()
    ref_options.update({k: v for k, v in options.items() if k in ref_options})
    ref_options.update(use_fp16=fp16, cache_text_emb=False, timestep_respacing="")
    model, _ = create_model_and_diffusion(**ref_options)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval(), ref_options


def make_tokens(options, batch, device):
    from samplers.tokenizers import glide_tokenize

    tokens, mask = glide_tokenize([CAPTION] * batch, text_ctx=int(options["text_ctx"]))
    uncond_tokens, uncond_mask = glide_tokenize([""] * batch, text_ctx=int(options["text_ctx"]))
    as_tensor = lambda t, dtype: torch.as_tensor(t, device=device, dtype=dtype)
    return (
        as_tensor(tokens, torch.long),
        as_tensor(mask, torch.bool),
        as_tensor(uncond_tokens, torch.long),
        as_tensor(uncond_mask, torch.bool),
    )


class StepClock:
    """Wall-clock time of each step (callback or generator driven), synchronising the device."""

    def __init__(self, device):
        self.device, self.times = device, []
        synchronize(device)
        self.last = time.perf_counter()

    def tick(self, *_):
        synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def run_ours(model, diffusion, tokens, tape, batch, autocast, device):
    """Our guided ancestral loop; returns (samples, [setup (text encoding) time, step times...])."""
    cond, cond_mask, uncond, uncond_mask = tokens
    clock = StepClock(device)
    model_fn = classifier_free_model_fn(model, cond, cond_mask, uncond, uncond_mask, GUIDANCE, autocast=autocast)
    noise = TapeNoise(tape, rows=slice(0, batch))
    x = noise.initial(tape[0][:batch].shape, device)
    clock.tick()
    out = sample_ancestral(model_fn, x, diffusion, noise=noise, callback=clock.tick)
    return out, clock.times


def run_reference(model, steps, tokens, tape, batch, device):
    """The reference notebook's guided p_sample_loop (text transformer recomputed every step).

    Returns (samples, [setup time, step times...])."""
    from glide_text2im.gaussian_diffusion import get_named_beta_schedule
    from glide_text2im.respace import SpacedDiffusion, space_timesteps

    diffusion = SpacedDiffusion(
        use_timesteps=space_timesteps(1000, str(steps)), betas=get_named_beta_schedule("squaredcos_cap_v2", 1000)
    )
    cond, cond_mask, uncond, uncond_mask = tokens
    kwargs = dict(tokens=torch.cat([cond, uncond]), mask=torch.cat([cond_mask, uncond_mask]))

    def model_fn(x_t, ts, **kw):
        half = x_t[: len(x_t) // 2]
        out = model(torch.cat([half, half]), ts, **kw)
        eps, rest = out[:, :3], out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + GUIDANCE * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    draws = iter(tape[1:])
    original_randn_like = torch.randn_like
    torch.randn_like = lambda like, **kw: next(draws).to(like)  # the reference's per-step noise, from our tape
    try:
        clock = StepClock(device)
        clock.tick()
        steps = diffusion.p_sample_loop_progressive(
            model_fn,
            tuple(tape[0].shape),
            noise=tape[0].to(device),
            device=device,
            clip_denoised=True,
            model_kwargs=kwargs,
        )
        for out in steps:  # noqa: B007  (the last step's output is returned)
            clock.tick()
    finally:
        torch.randn_like = original_randn_like
    return out["sample"][:batch], clock.times


def count_flops(model, tokens, batch, device):
    cond, cond_mask, uncond, uncond_mask = tokens
    with torch.no_grad(), FlopCounterMode(display=False) as text_counter:
        text = model.encode_text(torch.cat([cond, uncond]), torch.cat([cond_mask, uncond_mask]))
    x = torch.randn(2 * batch, 3, 64, 64, device=device)
    t = torch.full((2 * batch,), 500, device=device, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as unet_counter:
        model(x, t, text=text)
    return unet_counter.get_total_flops() / (2 * batch), text_counter.get_total_flops() / (2 * batch)


CATEGORIES = (
    ("conv", ("conv", "mkldnn_convolution")),
    ("attention", ("bmm", "baddbmm", "softmax", "scaled_dot_product", "einsum", "_flash", "_efficient_attention")),
    ("matmul/linear", ("addmm", "aten::mm", "matmul", "linear")),
    ("norm", ("group_norm", "layer_norm", "native_group_norm", "native_layer_norm")),
)


def profile_step(model, tokens, batch, device, autocast):
    """Self-time shares by operator family for one guided step, plus the text transformer's time."""
    cond, cond_mask, uncond, uncond_mask = tokens
    model_fn = classifier_free_model_fn(model, cond, cond_mask, uncond, uncond_mask, GUIDANCE, autocast=autocast)
    x = torch.randn(batch, 3, 64, 64, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad(), torch.profiler.profile(activities=activities) as prof:
        model_fn(x, t)
        synchronize(device)
    use_cuda = torch.device(device).type == "cuda"
    shares, total = defaultdict(float), 0.0
    for event in prof.key_averages():
        self_time = event.self_device_time_total if use_cuda else event.self_cpu_time_total
        total += self_time
        name = event.key.lower()
        family = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        shares[family] += self_time
    shares = {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])} if total else {}

    with torch.no_grad():
        synchronize(device)
        start = time.perf_counter()
        model.encode_text(torch.cat([cond, uncond]), torch.cat([cond_mask, uncond_mask]))
        synchronize(device)
        text_seconds = time.perf_counter() - start
    return shares, text_seconds


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, autocast = args.device, (None if args.dtype == "float32" else getattr(torch, args.dtype))
    model, options = build_ours(device)
    reference, _ = (
        (None, None) if args.no_reference else build_reference(options, model.state_dict(), device, args.reference_fp16)
    )
    if args.convert and autocast is not None:
        model, autocast = model.to_dtype(autocast), None
    ours_model = model
    if args.channels_last:
        ours_model = model.to(memory_format=torch.channels_last)
    if args.compile:
        ours_model = torch.compile(model)
    tokens = make_tokens(options, args.batch, device)
    diffusion = Diffusion.spaced("squaredcos_cap_v2", str(args.steps))
    generator = torch.Generator().manual_seed(1)
    tape = [torch.randn(2 * args.batch, 3, 64, 64, generator=generator) for _ in range(args.steps + 1)]

    unet_flops, text_flops = count_flops(model, tokens, args.batch, device)  # also warms up the kernels
    if args.compile:  # compile outside the timing
        run_ours(ours_model, Diffusion.spaced("squaredcos_cap_v2", "1"), tokens, tape, args.batch, autocast, device)
    ours_times, ref_times = [], []
    for _ in range(args.repeats):  # alternate so that both see the same machine load
        if reference is not None:
            ref, times = run_reference(reference, args.steps, tokens, tape, args.batch, device)
            ref_times.append(times)
        ours, times = run_ours(ours_model, diffusion, tokens, tape, args.batch, autocast, device)
        ours_times.append(times)
    # robust to a shared machine: the fastest repeat of each phase (setup, every step), summed
    ours_seconds = sum(map(min, zip(*ours_times)))
    report = {
        "device": device,
        "dtype": args.dtype,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "converted": args.convert,
        "reference_fp16": args.reference_fp16,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "load_average": os.getloadavg()[0],
        "gflop_per_image_step_unet": round(unet_flops / 1e9, 2),
        "gflop_per_caption_text": round(text_flops / 1e9, 2),
        "ours": {
            "seconds": round(ours_seconds, 3),
            "text_encoding_seconds": round(min(t[0] for t in ours_times), 3),
            "seconds_per_step": round(ours_seconds / args.steps, 3),
            "samples_per_second": args.batch / ours_seconds,
            "gflops_per_second": round(
                (2 * args.batch * (unet_flops * args.steps + text_flops)) / ours_seconds / 1e9, 1
            ),
            "non_finite": int((~torch.isfinite(ours)).sum()),
        },
    }
    if reference is not None:
        ref_seconds = sum(map(min, zip(*ref_times)))
        rel = ((ours.double() - ref.double()).norm() / ref.double().norm()).item()
        report["reference"] = {
            "seconds": round(ref_seconds, 3),
            "seconds_per_step": round(ref_seconds / args.steps, 3),
            "samples_per_second": args.batch / ref_seconds,
            "gflops_per_second": round(
                (2 * args.batch * (unet_flops + text_flops) * args.steps) / ref_seconds / 1e9, 1
            ),
        }
        report["rel_error_vs_reference"] = rel
        report["speedup_samples_per_second"] = round(ref_seconds / ours_seconds, 3)
    else:
        report["reference"] = "glide_text2im not importable: ours only"
    if not args.no_profile:
        shares, text_seconds = profile_step(model, tokens, args.batch, device, autocast)
        report["profile_self_time_shares"] = shares
        report["text_transformer_seconds_per_call"] = round(text_seconds, 3)
        report["text_transformer_share_of_reference_step"] = (
            round(text_seconds / report["reference"]["seconds_per_step"], 3) if reference is not None else None
        )
    print_report(report, args.json, "{key:>42}: {value}")


if __name__ == "__main__":
    main()
