"""`glide-eval sample`: generate (or inpaint) images for one prompt, PNG + JSON provenance sidecar."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from glide_eval.cli import echo_json
from metrics.images import ImageError, read_rgb
from samplers.guidance_specs import parse_guidance
from samplers.pipeline import InpaintSpec, convert_models, load_glide_models, sample_images
from samplers.sampling import SAMPLERS
from samplers.schedules import space_timesteps
from storage import atomic_write_text, atomic_write_with, package_versions, unwritable_folder


def _read_image(path: Path) -> torch.Tensor:
    try:
        array = read_rgb(path).astype(np.float32)
    except ImageError as error:
        raise click.BadParameter(str(error), param_hint="--inpaint") from None
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def _read_mask(path: Path, size: int) -> torch.Tensor:
    try:
        mask = Image.open(path).convert("L").resize((size, size), resample=Image.NEAREST)
    except OSError as error:
        raise click.BadParameter(f"cannot read mask {path}: {error}", param_hint="--mask") from None
    return (torch.from_numpy(np.array(mask)) >= 128).float()[None, None]


@click.command("sample")
@click.option("--prompt", required=True, help="Caption to sample.")
@click.option(
    "--guidance",
    default="cfg:3.0",
    show_default=True,
    help="cfg:SCALE (classifier-free), clip:SCALE (noised CLIP), or none / unguided.",
)
@click.option(
    "--steps",
    default="100",
    show_default=True,
    help="Base-model respacing: a step count or any respacing string (e.g. 250, ddim50, 10,10,3,2,2).",
)
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="ancestral", show_default=True)
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM eta.")
@click.option("--upsample", is_flag=True, help="Also run the 256px upsampler (fast27 DDIM).")
@click.option("--upsample-temp", type=float, default=0.997, show_default=True)
@click.option(
    "--inpaint",
    "inpaint_image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Image to inpaint (uses the inpainting checkpoints).",
)
@click.option(
    "--mask",
    "mask_image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Inpainting mask image: white = known pixels kept, black = region to generate.",
)
@click.option(
    "--num-samples", type=int, default=1, show_default=True, help="Samples (seeded 0..N-1), saved side by side."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output PNG; a JSON sidecar with provenance is written next to it.",
)
@click.option(
    "--checkpoints",
    type=click.Path(path_type=Path),
    envvar="GLIDE_CHECKPOINTS",
    help="Checkpoint directory (default: $GLIDE_CHECKPOINTS).",
)
@click.option("--random-weights", is_flag=True, help="Official configs with random weights (smoke tests, benchmarks).")
@click.option(
    "--tiny", is_flag=True, help="With --random-weights: small stand-in configs that run in seconds on a CPU."
)
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the provenance record as JSON.")
def sample_command(**options):
    """Sample images for one prompt with GLIDE (base 64px, optionally upsampled to 256px)."""
    opts = SampleOptions(**options)
    kind, scale = _check(opts)
    try:
        models = load_glide_models(
            opts.checkpoints,
            upsample=opts.upsample,
            clip=kind == "clip",
            inpaint=opts.inpaint_image is not None,
            random_weights=opts.random_weights,
            tiny=opts.tiny,
            seed=opts.seed,
            device=opts.device,
        )
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    models = convert_models(models, getattr(torch, opts.dtype))  # once, not autocast at every step
    inpaint = None
    if opts.inpaint_image is not None:
        size = int(models.base_options["image_size"])
        inpaint = InpaintSpec(_read_image(opts.inpaint_image), _read_mask(opts.mask_image, size))

    started = time.perf_counter()
    result = sample_images(
        models,
        [opts.prompt] * opts.num_samples,
        list(range(opts.num_samples)),
        opts.seed,
        guidance=(kind, scale),
        respacing=opts.steps,
        sampler=opts.sampler,
        eta=opts.eta,
        upsample=opts.upsample,
        upsample_temp=opts.upsample_temp,
        inpaint=inpaint,
        batch_size=opts.batch_size,
        device=opts.device,
        dtype=getattr(torch, opts.dtype),
        progress=opts.progress,
    )
    seconds = time.perf_counter() - started

    strip = torch.cat(list(result.images), dim=2).permute(1, 2, 0).numpy()
    atomic_write_with(opts.out_path, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))
    record = _record(opts, (kind, scale), models, result, seconds, inpaint is not None)
    sidecar = opts.out_path.with_suffix(".json")
    atomic_write_text(sidecar, json.dumps(record, indent=2, sort_keys=True))
    if opts.as_json:
        echo_json(record)
    else:
        click.echo(f"wrote {opts.out_path} ({len(result.sample_ids)} samples, {seconds:.1f}s) and {sidecar}")
    if result.nan_samples:
        click.echo(f"warning: non-finite values in samples {result.nan_samples}", err=True)


@dataclass(frozen=True)
class SampleOptions:
    """The options of `glide-eval sample`, as click passes them."""

    prompt: str
    guidance: str
    steps: str
    sampler: str
    eta: float
    upsample: bool
    upsample_temp: float
    inpaint_image: Path | None
    mask_image: Path | None
    num_samples: int
    seed: int
    out_path: Path
    checkpoints: Path | None
    random_weights: bool
    tiny: bool
    device: str
    dtype: str
    batch_size: int
    progress: bool
    as_json: bool


def _check(opts: SampleOptions) -> tuple[str, float]:
    """The parsed guidance, after refusing option combinations that cannot work."""
    try:
        kind, scale = parse_guidance(opts.guidance)
        space_timesteps(1000, opts.steps)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if (opts.inpaint_image is None) != (opts.mask_image is None):
        raise click.UsageError("--inpaint and --mask go together")
    if opts.tiny and not opts.random_weights:
        raise click.UsageError("--tiny needs --random-weights")
    if not opts.random_weights and opts.checkpoints is None:
        raise click.UsageError("no checkpoints: pass --checkpoints DIR, set GLIDE_CHECKPOINTS, or use --random-weights")
    if opts.out_path.suffix.lower() != ".png":
        raise click.BadParameter(f"{opts.out_path}: the output must be a .png file", param_hint="--out")
    problem = unwritable_folder(opts.out_path.parent)  # before sampling, not after
    if problem:
        raise click.BadParameter(f"{opts.out_path}: {problem}", param_hint="--out")
    return kind, scale


def _record(opts: SampleOptions, guidance: tuple[str, float], models, result, seconds: float, inpaint: bool) -> dict:
    """The provenance sidecar of the written PNG."""
    return {
        "prompt": opts.prompt,
        "seed": opts.seed,
        "sample_ids": result.sample_ids,
        "guidance": {"kind": guidance[0], "scale": guidance[1]},
        "respacing": opts.steps,
        "sampler": opts.sampler,
        "eta": opts.eta,
        "upsample": {"respacing": "fast27", "temperature": opts.upsample_temp} if opts.upsample else None,
        "inpaint": {"image": str(opts.inpaint_image), "mask": str(opts.mask_image)} if inpaint else None,
        "image_size": list(result.images.shape[-2:]),
        "random_weights": opts.random_weights,
        "tiny": opts.tiny,
        "checkpoints": str(opts.checkpoints) if opts.checkpoints and not opts.random_weights else None,
        "checkpoint_sha256": models.sha256,
        "model_options": {"base": models.base_options, "upsample": models.upsampler_options},
        "device": opts.device,
        "dtype": opts.dtype,
        "seconds": round(seconds, 3),
        "nan_steps": result.nan_steps,
        "nan_samples": result.nan_samples,
        "versions": package_versions(),
        "image": str(opts.out_path),
    }
