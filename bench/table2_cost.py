"""What one Table 2 image costs: base 64px (classifier-free guidance, 250 ancestral steps) then
the upsampler (fast27, 27 DDIM steps), measured on random-weight models of the official
configurations (no checkpoint needed), plus the FLOPs that give a GPU estimate.

Times a few steps of each stage through `samplers.pipeline.sample_images` (the sweep's own
path) and scales them to the protocol's step counts; counts the FLOPs of one step of each
stage with torch.utils.flop_counter.

    .venv/bin/python bench/table2_cost.py                       # CPU float32, 1 caption
    .venv/bin/python bench/table2_cost.py --device cuda --dtype float16 --batch 16 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from samplers.pipeline import convert_models, load_glide_models, sample_images

BASE_STEPS, UPSAMPLE_STEPS = 250, 27  # the Table 2 protocol: base "250", upsampler "fast27"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=1, help="captions sampled together")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each stage (beyond a 1-step warm-up)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's peak for --dtype (for a fraction)")
    return parser.parse_args()


def seconds(models, captions, device, dtype, base_steps: int, upsample_steps: int) -> float:
    kwargs = dict(guidance=("cfg", 1.5), sampler="ancestral", upsample_temp=0.997, batch_size=len(captions))
    start = time.perf_counter()
    ids = list(range(len(captions)))
    sample_images(
        models,
        captions,
        ids,
        0,
        respacing=str(base_steps),
        upsample=upsample_steps > 0,
        upsample_respacing=str(max(upsample_steps, 1)),
        device=device,
        dtype=dtype,
        **kwargs,
    )
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_flops(models, device) -> tuple[float, float]:
    """FLOPs of one step for one image: the base model on [cond, uncond], the upsampler once (the
    caption's text encoding excluded: the samplers compute it once per sampling loop)."""
    x64, x256 = torch.zeros(2, 3, 64, 64, device=device), torch.zeros(1, 3, 256, 256, device=device)
    tokens = torch.zeros(2, 128, dtype=torch.long, device=device)
    mask = torch.ones(2, 128, dtype=torch.bool, device=device)
    t = torch.tensor([500, 500], device=device)
    with torch.no_grad():
        text = models.base.encode_text(tokens, mask)
        text_up = models.upsampler.encode_text(tokens[:1], mask[:1])
    with torch.no_grad(), FlopCounterMode(display=False) as base:
        models.base(x64, t, text=text)
    with torch.no_grad(), FlopCounterMode(display=False) as up:
        models.upsampler(x256, t[:1], text=text_up, low_res=x64[:1])
    return float(base.get_total_flops()), float(up.get_total_flops())


def main():
    args = parse_args()
    dtype = getattr(torch, args.dtype)
    models = convert_models(load_glide_models(None, upsample=True, random_weights=True, device=args.device), dtype)
    captions = ["a corgi wearing a red bowtie and a purple party hat"] * args.batch
    n = args.steps
    seconds(models, captions, args.device, dtype, 1, 0)  # warm-up
    base_only = seconds(models, captions, args.device, dtype, n, 0)
    base_one = seconds(models, captions, args.device, dtype, 1, 0)
    with_up = seconds(models, captions, args.device, dtype, 1, n)
    base_step = (base_only - base_one) / (n - 1) if n > 1 else base_only
    up_step = (with_up - base_one) / n
    per_image = (BASE_STEPS * base_step + UPSAMPLE_STEPS * up_step) / args.batch
    base_flops, up_flops = step_flops(models, args.device)
    flops_image = BASE_STEPS * base_flops + UPSAMPLE_STEPS * up_flops
    out = {
        "device": args.device,
        "dtype": args.dtype,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "base_step_s": round(base_step / args.batch, 3),
        "upsample_step_s": round(up_step / args.batch, 3),
        "seconds_per_image": round(per_image, 1),
        "hours_per_30k_images": round(per_image * 30000 / 3600, 1),
        "tflop_per_image": round(flops_image / 1e12, 2),
        "gflop_base_step": round(base_flops / 1e9, 1),
        "gflop_upsample_step": round(up_flops / 1e9, 1),
        "achieved_tflops": round(flops_image / per_image / 1e12, 3),
    }
    if args.peak_tflops:
        out["fraction_of_peak"] = round(out["achieved_tflops"] / args.peak_tflops, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
