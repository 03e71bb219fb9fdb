"""`glide-eval metrics`, `glide-eval coco-reference` and `glide-eval coco-captions`."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from glide_eval.cli import echo_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _read_protocol_image(path: Path, protocol: tuple[int, str]) -> np.ndarray:
    """A raw reference image through coco-reference's protocol: decode, crop, resize to uint8 [3, R, R]."""
    from PIL import Image

    from glide_eval.coco import preprocess_image
    from metrics.images import ImageError

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess_image(img, protocol[0], protocol[1], str(path))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read image: {e}") from None


def _images_from_folder(folder: Path, batch_size: int, protocol: tuple[int, str] | None = None):
    """uint8 batches [B,3,H,W] of the folder's images in name order; a batch never mixes sizes.
    With ``protocol`` = (resolution, crop rule), every image goes through coco-reference's crop and resize."""
    import torch

    from metrics.images import ImageError, image_files, read_rgb_chw

    files = image_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise click.ClickException(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    batch = []
    for f in files:
        try:
            arr = read_rgb_chw(f) if protocol is None else _read_protocol_image(f, protocol)
        except ImageError as e:
            raise click.ClickException(str(e)) from None
        if batch and (len(batch) == batch_size or batch[0].shape != arr.shape):
            yield torch.from_numpy(np.stack(batch))
            batch = []
        batch.append(arr)
    yield torch.from_numpy(np.stack(batch))


def _images_from_npz(path: Path, data, batch_size: int):
    import torch

    arr = data["arr_0"]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise click.ClickException(f"{path}: arr_0 must be uint8 [N, H, W, 3], got {arr.dtype} {arr.shape}")
    for i in range(0, len(arr), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(arr[i:i + batch_size].transpose(0, 3, 1, 2)))


def _read_captions(path: Path) -> list[str]:
    if path.suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
        if "caption" not in df.columns:
            raise click.ClickException(f"{path}: no 'caption' column")
        return df["caption"].astype(str).tolist()
    return [line for line in path.read_text().splitlines() if line.strip()]


def load_input(path: str, make_extractor, make_clip=None, captions=None, batch_size: int = 64,
               protocol: tuple[int, str] | None = None):
    """A stats/feature file as is, or a folder / arr_0 npz of images through the extractors (a folder's
    images through coco-reference's crop and resize when ``protocol`` = (resolution, crop) is given)."""
    from metrics import FeatureAccumulator, ReferenceStats
    from metrics.features import FORMAT as FEATURES_FORMAT
    from metrics.reference import FORMAT as REFERENCE_FORMAT

    p = Path(path)
    if p.is_dir():
        batches = _images_from_folder(p, batch_size, protocol)
    elif p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as data:
            fmt = json.loads(str(data["meta"])).get("format") if "meta" in data.files else None
            if fmt == REFERENCE_FORMAT:
                return ReferenceStats.load(p)
            if fmt == FEATURES_FORMAT:
                return FeatureAccumulator.load(p)
            if "arr_0" not in data.files:
                raise click.ClickException(f"{p}: neither images (arr_0) nor a glide-eval statistics file")
            batches = list(_images_from_npz(p, data, batch_size))
    else:
        raise click.ClickException(f"{p}: not a folder of images or an .npz file")
    clip = make_clip() if make_clip else None
    acc = FeatureAccumulator(make_extractor(), clip)
    done = 0
    for images in batches:
        caps = None
        if clip is not None:
            caps = captions[done:done + images.shape[0]]
            if len(caps) != images.shape[0]:
                raise click.ClickException(f"{p}: more images than captions ({len(captions)})")
        acc.add(images, caps)
        done += images.shape[0]
    if captions is not None and clip is not None and done != len(captions):
        raise click.ClickException(f"{p}: {done} images but {len(captions)} captions")
    if acc.n_nan:
        raise click.ClickException(f"{p}: {acc.n_nan} of {acc.n + acc.n_nan} images gave NaN/inf features")
    if protocol is not None:
        from glide_eval.coco import CROP_RULES

        acc.meta.update(resolution=protocol[0], crop=protocol[1], crop_rule=CROP_RULES[protocol[1]])
    return acc


@click.command("metrics")
@click.option("--gen", "gen_path", required=True, help="Folder of images, arr_0 .npz, or feature-state .npz.")
@click.option("--ref", "ref_path", default=None,
              help="Folder of raw images (cropped and resized like coco-reference), arr_0 .npz, or cached "
                   "reference statistics.")
@click.option("--ref-resolution", type=click.IntRange(min=1), default=None,
              help="Resolution a --ref folder is resized to (default: the generated images' size).")
@click.option("--ref-crop", type=click.Choice(["center", "adm"]), default="center", show_default=True,
              help="Crop rule for a --ref folder (as coco-reference --crop).")
@click.option("--allow-resolution-mismatch", is_flag=True,
              help="Compare generated images with a reference of another resolution (a warning, not an error).")
@click.option("--allow-unknown-inception", is_flag=True,
              help="Use an Inception weights file that is not torch-fidelity's (sha256 6726825d...).")
@click.option("--fid", is_flag=True, help="Frechet Inception Distance.")
@click.option("--isc", is_flag=True, help="Inception Score.")
@click.option("--prc", is_flag=True, help="Precision and recall (k=3).")
@click.option("--clip-score", is_flag=True, help="CLIP score (needs --captions).")
@click.option("--captions", type=click.Path(dir_okay=False, exists=True),
              help="Captions of the generated images, in order: text (one a line), CSV or parquet.")
@click.option("--inception-weights", envvar="GLIDE_EVAL_INCEPTION", help="Inception weights file.")
@click.option("--clip-weights", envvar="GLIDE_EVAL_CLIP", help="CLIP weights file (OpenAI format).")
@click.option("--extractor", default="inception-v3-compat", show_default=True, help="Image feature extractor.")
@click.option("--clip-extractor", default="clip-vit-b-16", show_default=True, help="CLIP scorer.")
@click.option("--bootstrap", default=0, show_default=True, help="Bootstrap replicates for 95% intervals.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--isc-convention", type=click.Choice(["torch-fidelity", "guided-diffusion"]),
              default="torch-fidelity", show_default=True)
@click.option("--isc-splits", type=click.IntRange(min=1), default=10, show_default=True,
              help="Inception Score splits (torch-fidelity convention); needs at least this many images.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def metrics_command(gen_path, ref_path, ref_resolution, ref_crop, allow_resolution_mismatch, allow_unknown_inception,
                    fid, isc, prc, clip_score, captions, inception_weights, clip_weights, extractor, clip_extractor,
                    bootstrap, seed, isc_convention, isc_splits, device, batch_size, as_json):
    """Metrics of generated images (--gen) against reference images or statistics (--ref)."""
    from metrics import FeatureError, calculate_metrics, create_extractor
    from metrics.extractors import ExtractorError, check_known_weights

    if not (fid or isc or prc or clip_score):
        fid = isc = prc = True
    if (fid or prc) and not ref_path:
        raise click.UsageError("--fid and --prc need --ref")
    if clip_score and not captions:
        raise click.UsageError("--clip-score needs --captions")
    caps = _read_captions(Path(captions)) if captions else None
    cache = {}

    def make_extractor():
        if "image" not in cache:
            cache["image"] = create_extractor(extractor, inception_weights, device)
            if not allow_unknown_inception:
                check_known_weights(cache["image"])
        return cache["image"]

    def make_clip():
        return create_extractor(clip_extractor, clip_weights, device)

    try:
        gen = load_input(gen_path, make_extractor, make_clip if clip_score else None, caps, batch_size)
        ref = None
        if ref_path and (fid or prc):
            protocol = _ref_protocol(ref_path, ref_resolution, ref_crop, gen)
            ref = load_input(ref_path, make_extractor, None, None, batch_size, protocol)
        warnings = _check_inputs(gen, ref, isc and isc_convention == "torch-fidelity", isc_splits,
                                 allow_resolution_mismatch)
        results = calculate_metrics(gen, ref, fid=fid, isc=isc, prc=prc, clip_score=clip_score,
                                    isc_splits=isc_splits, isc_convention=isc_convention, bootstrap=bootstrap,
                                    seed=seed)
    except (ExtractorError, FeatureError, ValueError) as e:
        raise click.ClickException(f"--gen {gen_path} / --ref {ref_path}: {e}") from None
    results["provenance"] = _provenance(cache.get("image"), gen, ref, bootstrap, seed)
    results["provenance"].update(isc_splits=isc_splits, warnings=warnings)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        echo_json(results)
        return
    for key in sorted(k for k in results if k != "provenance"):
        value = results[key]
        click.echo(f"{key:<20} {value:.6g}" if isinstance(value, float) else f"{key:<20} {value}")


def _ref_protocol(ref_path: str, resolution: int | None, crop: str, gen) -> tuple[int, str] | None:
    """(resolution, crop) a --ref folder of raw images is preprocessed with; None for files."""
    from metrics.compatibility import recorded_sizes

    if not Path(ref_path).is_dir():
        return None
    if resolution is None:
        sizes = recorded_sizes(gen) or []
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise click.UsageError(f"--ref {ref_path} is a folder of raw images, cropped and resized like "
                                   "coco-reference: pass --ref-resolution (the generated images do not give one "
                                   f"square size: {sizes or 'unknown'})")
        resolution = sizes[0][0]
    return resolution, crop


def _check_inputs(gen, ref, isc: bool, isc_splits: int, allow_resolution_mismatch: bool) -> list[str]:
    """Errors for inputs that cannot give a meaningful number; returns warnings for the allowed ones."""
    from metrics.compatibility import resolution_mismatch

    if isc and gen.n < isc_splits:
        raise click.ClickException(f"--isc: {gen.n} generated images for {isc_splits} splits; the Inception Score "
                                   f"needs at least one image per split: lower --isc-splits (at most {gen.n})")
    problem = resolution_mismatch(gen, ref) if ref is not None else None
    if problem and not allow_resolution_mismatch:
        raise click.ClickException(f"{problem}. Sample (or upsample) at the reference's resolution, build the "
                                   "reference at the samples' (coco-reference --resolution N, or --ref-resolution "
                                   "for a --ref folder), or pass --allow-resolution-mismatch")
    return [problem] if problem else []


def _provenance(extractor, gen, ref, bootstrap, seed) -> dict:
    from metrics.reference import package_versions

    def ext(side):
        meta = getattr(side, "meta", {}) or {}
        return {"extractor": meta.get("extractor"), "extractor_sha256": meta.get("extractor_sha256")}

    return {"gen": ext(gen), "ref": ext(ref) if ref is not None else None, "bootstrap": bootstrap,
            "seed": seed, "versions": package_versions()}


@click.command("coco-reference")
@click.option("--coco", "coco_dir", envvar="GLIDE_EVAL_COCO", required=True, help="MS-COCO folder.")
@click.option("--resolution", default=256, show_default=True, type=int)
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, exists=True), help="Image ids, one a line.")
@click.option("--out", type=click.Path(dir_okay=False), help="Statistics file (default: cache folder).")
@click.option("--crop", type=click.Choice(["center", "adm"]), default="center", show_default=True)
@click.option("--inception-weights", envvar="GLIDE_EVAL_INCEPTION", help="Inception weights file.")
@click.option("--extractor", default="inception-v3-compat", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--workers", default=None, type=int, help="Image decoding threads.")
@click.option("--allow-unknown-inception", is_flag=True,
              help="Use an Inception weights file that is not torch-fidelity's (sha256 6726825d...).")
@click.option("--json", "as_json", is_flag=True)
def coco_reference_command(coco_dir, resolution, ids_file, out, crop, inception_weights, extractor, device,
                           batch_size, workers, allow_unknown_inception, as_json):
    """Build (or reuse, when its metadata matches) cached MS-COCO reference statistics."""
    from glide_eval.coco import CocoError, coco_reference, read_ids
    from metrics import FeatureError, create_extractor
    from metrics.extractors import ExtractorError, check_known_weights

    try:
        ids = read_ids(ids_file) if ids_file else None
        ext = create_extractor(extractor, inception_weights, device)
        if not allow_unknown_inception:
            check_known_weights(ext)
        stats, path = coco_reference(ext, coco_dir, resolution, ids, out, crop, batch_size, workers,
                                     progress=not as_json, log=lambda m: click.echo(m, err=True))
    except (CocoError, ExtractorError, FeatureError) as e:
        raise click.ClickException(str(e)) from None
    info = {"path": str(path), "n": stats.n, **stats.meta}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"{path}: {stats.n} images, {stats.meta['extractor']} @ {resolution}px")


@click.command("coco-captions")
@click.option("--coco", "coco_dir", envvar="GLIDE_EVAL_COCO", required=True, help="MS-COCO folder.")
@click.option("--n", default=30000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=".csv or .parquet")
@click.option("--json", "as_json", is_flag=True)
def coco_captions_command(coco_dir, n, seed, out, as_json):
    """Seeded sample of N (image id, caption) pairs to generate from."""
    from glide_eval.coco import CocoError, sample_caption_records, save_table

    try:
        df = sample_caption_records(coco_dir, n, seed)
    except CocoError as e:
        raise click.ClickException(str(e)) from None
    save_table(df, out)
    if as_json:
        echo_json({"path": out, "n": len(df), "seed": seed})
    else:
        click.echo(f"{out}: {len(df)} captions (seed {seed})")
