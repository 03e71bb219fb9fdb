"""Check that the toy world behaves like the paper: as the classifier-free guidance scale
grows, CLIP score and precision rise, recall falls, FID is lowest at a modest scale. `--family
clip` measures the same along the CLIP guidance scale (on this world it barely moves CLIP score:
README, "The bundled toy world").

    python -m glide_eval.toy.evaluate --n 1024 --scales 0,1.5,3,5,8 [--family cfg|clip] [--method ddim]
        [--respacing 10] [--json]

Scale 0 means unguided (conditional model alone), in either family. Base resolution, toy extractors, references
are validation images at that resolution (indices n.. 2n, disjoint from the captions' scenes).
"""

from __future__ import annotations

import json

import click
import numpy as np
import torch

from glide_eval.toy.models import UPSAMPLE_TEMPERATURE, load_toy_models
from glide_eval.toy.world import ATTRIBUTES, dataset, parse_caption, sample_captions
from metrics.calculate import calculate_metrics
from metrics.clip_score import clip_scores
from metrics.extractors import create_extractor
from samplers.pipeline import sample_images


def guidance_trend(
    n: int = 200,
    scales=(0, 1, 2, 3, 5, 8),
    respacing: str = "10",
    seed: int = 0,
    upsample: bool = False,
    batch_size: int = 100,
    progress: bool = False,
    method: str = "ddim",
    family: str = "cfg",
) -> list[dict]:
    """One row per guidance scale of `family` ("cfg" or "clip"): fid, precision, recall, is,
    clip_score, attribute accuracies."""
    if family not in ("cfg", "clip"):
        raise ValueError(f"family must be 'cfg' or 'clip', got {family!r}")
    models = load_toy_models(upsample=upsample, clip=family == "clip")
    classifier, clip = create_extractor("toy-classifier"), create_extractor("toy-clip")
    size = (models.upsampler_options if upsample else models.base_options)["image_size"]
    captions = sample_captions(n, seed=seed)
    reference = dataset(n, "validation", size, seed=seed, start=n)[0]
    ref = classifier(torch.from_numpy(reference))
    wanted = [parse_caption(c) for c in captions]
    rows = []
    for scale in scales:
        guidance = ("none", 0.0) if scale == 0 else (family, float(scale))
        result = sample_images(
            models,
            captions,
            list(range(n)),
            seed,
            guidance=guidance,
            respacing=respacing,
            sampler=method,
            upsample=upsample,
            upsample_temp=UPSAMPLE_TEMPERATURE,
            batch_size=batch_size,
            progress=progress,
        )
        feats = classifier(result.images)
        scores, truncated = clip_scores(clip, result.images, captions)
        gen = {
            "pool": feats["pool"].numpy(),
            "logits_unbiased": feats["logits_unbiased"].numpy(),
            "clip_scores": scores,
            "n_truncated": truncated,
        }
        metrics = calculate_metrics(gen, {"pool": ref["pool"].numpy()}, clip_score=True, k=3)
        pred = classifier.predict(result.images)
        row = {"scale": scale, **{k: metrics[k] for k in ("fid", "precision", "recall", "is", "clip_score")}}
        for k in ATTRIBUTES:
            row[f"acc_{k}"] = float(np.mean([int(pred[k][i]) == w[k] for i, w in enumerate(wanted)]))
        rows.append(row)
    return rows


@click.command()
@click.option("--n", default=200, show_default=True)
@click.option("--scales", default="0,1,2,3,5,8", show_default=True)
@click.option("--family", type=click.Choice(["cfg", "clip"]), default="cfg", show_default=True)
@click.option("--method", type=click.Choice(["ddim", "ancestral"]), default="ddim", show_default=True)
@click.option("--respacing", default="10", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--upsample", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def main(n, scales, family, method, respacing, seed, upsample, as_json):
    torch.set_num_threads(2)
    rows = guidance_trend(
        n, [float(s) for s in scales.split(",")], respacing, seed, upsample, progress=True, method=method, family=family
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))
        return
    import pandas as pd

    click.echo(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
