"""`glide-eval sample`: generate (or inpaint) images for one prompt, PNG + JSON provenance sidecar."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from glide_eval.cli import echo_json
from glide_eval.sweep_components import package_versions
from glide_eval.sweep_store import atomic_write_with


def _read_image(path: Path) -> torch.Tensor:
    from metrics.images import ImageError, read_rgb

    try:
        array = read_rgb(path).astype(np.float32)
    except ImageError as error:
        raise click.BadParameter(str(error), param_hint="--inpaint") from None
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def _read_mask(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    try:
        mask = Image.open(path).convert("L").resize((size, size), resample=Image.NEAREST)
    except OSError as error:
        raise click.BadParameter(f"cannot read mask {path}: {error}", param_hint="--mask") from None
    return (torch.from_numpy(np.array(mask)) >= 128).float()[None, None]


@click.command("sample")
@click.option("--prompt", required=True, help="Caption to sample.")
@click.option("--guidance", default="cfg:3.0", show_default=True,
              help="cfg:SCALE (classifier-free), clip:SCALE (noised CLIP), or none / unguided.")
@click.option("--steps", default="100", show_default=True,
              help="Base-model respacing: a step count or any respacing string (e.g. 250, ddim50, 10,10,3,2,2).")
@click.option("--sampler", type=click.Choice(["ancestral", "ddim"]), default="ancestral", show_default=True)
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM eta.")
@click.option("--upsample", is_flag=True, help="Also run the 256px upsampler (fast27 DDIM).")
@click.option("--upsample-temp", type=float, default=0.997, show_default=True)
@click.option("--inpaint", "inpaint_image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image to inpaint (uses the inpainting checkpoints).")
@click.option("--mask", "mask_image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inpainting mask image: white = known pixels kept, black = region to generate.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Samples (seeded 0..N-1), saved side by side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output PNG; a JSON sidecar with provenance is written next to it.")
@click.option("--checkpoints", type=click.Path(path_type=Path), envvar="GLIDE_CHECKPOINTS",
              help="Checkpoint directory (default: $GLIDE_CHECKPOINTS).")
@click.option("--random-weights", is_flag=True, help="Official configs with random weights (smoke tests, benchmarks).")
@click.option("--tiny", is_flag=True, help="With --random-weights: small stand-in configs that run in seconds on a CPU.")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the provenance record as JSON.")
def sample_command(prompt, guidance, steps, sampler, eta, upsample, upsample_temp, inpaint_image, mask_image,
                   num_samples, seed, out_path, checkpoints, random_weights, tiny, device, dtype, batch_size,
                   progress, as_json):
    """Sample images for one prompt with GLIDE (base 64px, optionally upsampled to 256px)."""
    from samplers.pipeline import InpaintSpec, load_glide_models, parse_guidance, sample_images
    from samplers.schedules import space_timesteps

    try:
        kind, scale = parse_guidance(guidance)
        space_timesteps(1000, steps)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if (inpaint_image is None) != (mask_image is None):
        raise click.UsageError("--inpaint and --mask go together")
    if tiny and not random_weights:
        raise click.UsageError("--tiny needs --random-weights")
    if not random_weights and checkpoints is None:
        raise click.UsageError("no checkpoints: pass --checkpoints DIR, set GLIDE_CHECKPOINTS, or use --random-weights")
    if out_path.suffix.lower() != ".png":
        raise click.BadParameter(f"{out_path}: the output must be a .png file", param_hint="--out")

    try:
        models = load_glide_models(checkpoints, upsample=upsample, clip=kind == "clip", inpaint=inpaint_image is not None,
                                   random_weights=random_weights, tiny=tiny, seed=seed, device=device)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    inpaint = None
    if inpaint_image is not None:
        inpaint = InpaintSpec(_read_image(inpaint_image), _read_mask(mask_image, int(models.base_options["image_size"])))

    started = time.perf_counter()
    result = sample_images(models, [prompt] * num_samples, list(range(num_samples)), seed, guidance=(kind, scale),
                           respacing=steps, sampler=sampler, eta=eta, upsample=upsample, upsample_temp=upsample_temp,
                           inpaint=inpaint, batch_size=batch_size, device=device, dtype=getattr(torch, dtype),
                           progress=progress)
    seconds = time.perf_counter() - started

    from PIL import Image

    strip = torch.cat(list(result.images), dim=2).permute(1, 2, 0).numpy()
    atomic_write_with(out_path, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))
    record = {
        "prompt": prompt, "seed": seed, "sample_ids": result.sample_ids, "guidance": {"kind": kind, "scale": scale},
        "respacing": steps, "sampler": sampler, "eta": eta,
        "upsample": {"respacing": "fast27", "temperature": upsample_temp} if upsample else None,
        "inpaint": {"image": str(inpaint_image), "mask": str(mask_image)} if inpaint is not None else None,
        "image_size": list(result.images.shape[-2:]), "random_weights": random_weights, "tiny": tiny,
        "checkpoints": str(checkpoints) if checkpoints and not random_weights else None,
        "checkpoint_sha256": models.sha256,
        "model_options": {"base": models.base_options, "upsample": models.upsampler_options}, "device": device, "dtype": dtype, "seconds": round(seconds, 3),
        "nan_steps": result.nan_steps, "nan_samples": result.nan_samples, "versions": package_versions(),
        "image": str(out_path),
    }
    sidecar = out_path.with_suffix(".json")
    atomic_write_with(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2, sort_keys=True)))
    if as_json:
        echo_json(record)
    else:
        click.echo(f"wrote {out_path} ({len(result.sample_ids)} samples, {seconds:.1f}s) and {sidecar}")
    if result.nan_samples:
        click.echo(f"warning: non-finite values in samples {result.nan_samples}", err=True)
