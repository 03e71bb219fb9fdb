"""`glide-eval metrics`, `glide-eval coco-reference` and `glide-eval coco-captions`."""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path

import click

from glide_eval.cli import auto_device, echo_json
from glide_eval.data.coco import CocoError, coco_reference, read_ids, sample_caption_records, save_table
from glide_eval.data.inputs import InputError, load_input, read_captions
from metrics import CorruptFileError, FeatureError, calculate_metrics, create_extractor
from metrics.compatibility import recorded_sizes, resolution_mismatch
from metrics.extractors import ExtractorError, check_known_weights
from metrics.names import REFERENCE_NAMES, SELECTABLE_NAMES
from metrics.reference import REFERENCE_PACKAGES
from storage import package_versions


@click.command("metrics")
@click.option("--gen", "gen_path", required=True, help="Folder of images, arr_0 .npz, or feature-state .npz.")
@click.option(
    "--ref",
    "ref_path",
    default=None,
    help="Folder of raw images (cropped and resized like coco-reference), arr_0 .npz, or cached reference statistics.",
)
@click.option(
    "--ref-resolution",
    type=click.IntRange(min=1),
    default=None,
    help="Resolution a --ref folder is resized to (default: the generated images' size).",
)
@click.option(
    "--ref-crop",
    type=click.Choice(["center", "adm"]),
    default="center",
    show_default=True,
    help="Crop rule for a --ref folder (as coco-reference --crop).",
)
@click.option(
    "--allow-resolution-mismatch",
    is_flag=True,
    help="Compare generated images with a reference of another resolution (a warning, not an error).",
)
@click.option(
    "--allow-unknown-inception",
    is_flag=True,
    help="Use an Inception weights file that is not torch-fidelity's (sha256 6726825d...).",
)
@click.option("--fid", is_flag=True, help="Frechet Inception Distance.")
@click.option("--isc", is_flag=True, help="Inception Score.")
@click.option("--prc", is_flag=True, help="Precision and recall (k=3).")
@click.option("--clip-score", is_flag=True, help="CLIP score (needs --captions).")
@click.option(
    "--captions",
    type=click.Path(dir_okay=False, exists=True),
    help="Captions of the generated images, in order: text (one a line), CSV or parquet.",
)
@click.option("--inception-weights", envvar="GLIDE_EVAL_INCEPTION", help="Inception weights file.")
@click.option("--clip-weights", envvar="GLIDE_EVAL_CLIP", help="CLIP weights file (OpenAI format).")
@click.option("--extractor", default="inception-v3-compat", show_default=True, help="Image feature extractor.")
@click.option("--clip-extractor", default="clip-vit-b-16", show_default=True, help="CLIP scorer.")
@click.option(
    "--names",
    help="Comma-separated metrics instead of --fid/--isc/--prc/--clip-score, e.g. fid,kid,fid_infinity "
    f"(known: {', '.join(SELECTABLE_NAMES)}).",
)
@click.option("--ci", is_flag=True, help="95% intervals of every metric (<metric>_se, _ci_low, _ci_high).")
@click.option(
    "--bootstrap",
    default=0,
    show_default=True,
    help="Obsolete alias of --ci (any N > 0 turns intervals on; they are no longer bootstrapped).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the randomised metrics (FID-infinity subsets).")
@click.option(
    "--isc-convention",
    type=click.Choice(["torch-fidelity", "guided-diffusion"]),
    default="torch-fidelity",
    show_default=True,
)
@click.option(
    "--isc-splits",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Inception Score splits (torch-fidelity convention); needs at least this many images.",
)
@click.option("--device", default="auto", show_default=True, callback=auto_device, help="auto: cuda if available.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def metrics_command(
    gen_path,
    ref_path,
    ref_resolution,
    ref_crop,
    allow_resolution_mismatch,
    allow_unknown_inception,
    fid,
    isc,
    prc,
    clip_score,
    captions,
    inception_weights,
    clip_weights,
    extractor,
    clip_extractor,
    names,
    ci,
    bootstrap,
    seed,
    isc_convention,
    isc_splits,
    device,
    batch_size,
    as_json,
):
    """Metrics of generated images (--gen) against reference images or statistics (--ref)."""
    wanted = _metric_names(names, fid, isc, prc, clip_score)
    needs_ref = bool(REFERENCE_NAMES & set(wanted))
    if needs_ref and not ref_path:
        raise click.UsageError(f"{', '.join(n for n in wanted if n in REFERENCE_NAMES)} need(s) --ref")
    clip_score = "clip_score" in wanted
    if clip_score and not captions:
        raise click.UsageError("--clip-score needs --captions")
    try:
        caps = read_captions(Path(captions)) if captions else None
    except InputError as e:
        raise click.ClickException(str(e)) from None
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
        gen = _load_input("--gen", gen_path, make_extractor, make_clip if clip_score else None, caps, batch_size)
        ref = None
        if ref_path and needs_ref:
            protocol = _ref_protocol(ref_path, ref_resolution, ref_crop, gen)
            ref = _load_input("--ref", ref_path, make_extractor, None, None, batch_size, protocol)
        isc_checked = "is" in wanted and isc_convention == "torch-fidelity"
        warnings = _check_inputs(gen, ref, isc_checked, isc_splits, allow_resolution_mismatch)
        results = calculate_metrics(
            gen,
            ref,
            names=wanted,
            ci=ci or bootstrap > 0,
            isc_splits=isc_splits,
            isc_convention=isc_convention,
            seed=seed,
        )
    except InputError as e:
        raise click.ClickException(str(e)) from None
    except (ExtractorError, FeatureError, ValueError) as e:
        raise click.ClickException(f"--gen {gen_path} / --ref {ref_path}: {e}") from None
    results["provenance"] = _provenance(cache.get("image"), gen, ref, ci or bootstrap > 0, seed)
    results["provenance"].update(isc_splits=isc_splits, warnings=warnings)
    _print_results(results, warnings, as_json)


def _print_results(results: dict, warnings: list[str], as_json: bool) -> None:
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
    if not Path(ref_path).is_dir():
        return None
    if resolution is None:
        sizes = recorded_sizes(gen) or []
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise click.UsageError(
                f"--ref {ref_path} is a folder of raw images, cropped and resized like coco-reference: pass "
                f"--ref-resolution (the generated images do not give one square size: {sizes or 'unknown'})"
            )
        resolution = sizes[0][0]
    return resolution, crop


def _check_inputs(gen, ref, isc: bool, isc_splits: int, allow_resolution_mismatch: bool) -> list[str]:
    """Errors for inputs that cannot give a meaningful number; returns warnings for the allowed ones."""
    if isc and gen.n < isc_splits:
        raise click.ClickException(
            f"--isc: {gen.n} generated images for {isc_splits} splits; the Inception Score needs at least "
            f"one image per split: lower --isc-splits (at most {gen.n})"
        )
    problem = resolution_mismatch(gen, ref) if ref is not None else None
    if problem and not allow_resolution_mismatch:
        raise click.ClickException(
            f"{problem}. Sample (or upsample) at the reference's resolution, build the reference at the "
            "samples' (coco-reference --resolution N, or --ref-resolution for a --ref folder), or pass "
            "--allow-resolution-mismatch"
        )
    return [problem] if problem else []


# what reading a damaged .npz raises besides CorruptFileError (truncated zip, bad CRC, bad deflate data)
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, pickle.UnpicklingError, OSError, KeyError)


def _load_input(flag: str, path: str, *args):
    """`load_input`, with a file that cannot be read reported as FLAG PATH and the reason."""
    try:
        return load_input(path, *args)
    except CorruptFileError as e:
        raise click.ClickException(f"{flag}: {e}") from None
    except UNREADABLE as e:
        raise click.ClickException(f"{flag} {path}: cannot be read ({type(e).__name__}: {e})") from None


def _metric_names(names: str | None, fid: bool, isc: bool, prc: bool, clip_score: bool) -> list[str]:
    """The metrics asked for: --names, else the flags, else FID, IS, precision and recall."""
    if names is not None:
        if fid or isc or prc or clip_score:
            raise click.UsageError("--names replaces --fid/--isc/--prc/--clip-score: give one or the other")
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in SELECTABLE_NAMES]
        if unknown or not wanted:
            raise click.UsageError(
                f"--names: unknown metric(s) {unknown or [names]} (known: {', '.join(SELECTABLE_NAMES)})"
            )
        return wanted
    if not (fid or isc or prc or clip_score):
        fid = isc = prc = True
    return [n for n, on in (("fid", fid), ("is", isc), ("precision", prc), ("clip_score", clip_score)) if on]


def _provenance(extractor, gen, ref, ci, seed) -> dict:
    def ext(side):
        meta = getattr(side, "meta", {}) or {}
        return {"extractor": meta.get("extractor"), "extractor_sha256": meta.get("extractor_sha256")}

    return {
        "gen": ext(gen),
        "ref": ext(ref) if ref is not None else None,
        "ci": ci,
        "seed": seed,
        "versions": package_versions(REFERENCE_PACKAGES),
    }


@click.command("coco-reference")
@click.option("--coco", "coco_dir", envvar="GLIDE_EVAL_COCO", required=True, help="MS-COCO folder.")
@click.option("--resolution", default=256, show_default=True, type=int)
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, exists=True), help="Image ids, one a line.")
@click.option("--out", type=click.Path(dir_okay=False), help="Statistics file (default: cache folder).")
@click.option("--crop", type=click.Choice(["center", "adm"]), default="center", show_default=True)
@click.option("--inception-weights", envvar="GLIDE_EVAL_INCEPTION", help="Inception weights file.")
@click.option("--extractor", default="inception-v3-compat", show_default=True)
@click.option("--device", default="auto", show_default=True, callback=auto_device, help="auto: cuda if available.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--workers", default=None, type=int, help="Image decoding threads.")
@click.option(
    "--allow-unknown-inception",
    is_flag=True,
    help="Use an Inception weights file that is not torch-fidelity's (sha256 6726825d...).",
)
@click.option("--json", "as_json", is_flag=True)
def coco_reference_command(
    coco_dir,
    resolution,
    ids_file,
    out,
    crop,
    inception_weights,
    extractor,
    device,
    batch_size,
    workers,
    allow_unknown_inception,
    as_json,
):
    """Build (or reuse, when its metadata matches) cached MS-COCO reference statistics."""
    try:
        ids = read_ids(ids_file) if ids_file else None
        ext = create_extractor(extractor, inception_weights, device)
        if not allow_unknown_inception:
            check_known_weights(ext)
        stats, path = coco_reference(
            ext,
            coco_dir,
            resolution,
            ids,
            out,
            crop,
            batch_size,
            workers,
            progress=not as_json,
            log=lambda m: click.echo(m, err=True),
        )
    except (CocoError, ExtractorError, FeatureError, CorruptFileError) as e:
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
    try:
        df = sample_caption_records(coco_dir, n, seed)
    except CocoError as e:
        raise click.ClickException(str(e)) from None
    save_table(df, out)
    if as_json:
        echo_json({"path": out, "n": len(df), "seed": seed})
    else:
        click.echo(f"{out}: {len(df)} captions (seed {seed})")
