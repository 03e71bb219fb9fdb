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
from metrics import CorruptFileError, FeatureError, FeatureSets, calculate_metrics, create_extractor
from metrics.compatibility import recorded_sizes, resolution_mismatch
from metrics.extractors import ExtractorError, check_known_weights
from metrics.names import (
    CLIP_ROLE,
    DEFAULT_EXTRACTORS,
    DINOV2_ROLE,
    INCEPTION_ROLE,
    REFERENCE_NAMES,
    SELECTABLE_NAMES,
    roles_for,
)
from metrics.reference import REFERENCE_PACKAGES
from storage import package_versions


def _role_options(role: str, prefix: str, envvar: str, weights_help: str, extractor_help: str):
    """`PREFIX-weights` (or $ENVVAR) and `PREFIX-extractor` (default: the role's) of a feature role."""
    weights = click.option(f"{prefix}-weights", envvar=envvar, help=weights_help)
    extractor = click.option(
        f"{prefix}-extractor", default=DEFAULT_EXTRACTORS[role], show_default=True, help=extractor_help
    )
    return lambda command: weights(extractor(command))


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
@click.option(
    "--clip-weights",
    envvar="GLIDE_EVAL_CLIP",
    help="CLIP ViT-B/16 weights: OpenAI's TorchScript archive, an OpenAI-format or open_clip state dict "
    "(.pt/.bin), or .safetensors.",
)
@click.option("--extractor", default="inception-v3-compat", show_default=True, help="Image feature extractor.")
@click.option("--clip-extractor", default="clip-vit-b-16", show_default=True, help="CLIP scorer.")
@_role_options(
    DINOV2_ROLE,
    "--dinov2",
    "GLIDE_EVAL_DINOV2",
    "Official DINOv2 checkpoint (dinov2_vitl14_pretrain.pth for the default) for fd_dinov2, density, coverage.",
    "Extractor of fd_dinov2, density and coverage (dinov2-vit-{s,b,l,g}-14, or any image extractor).",
)
@_role_options(
    CLIP_ROLE,
    "--clip-image",
    "GLIDE_EVAL_CLIP_IMAGE",
    "OpenAI CLIP file (ViT-L-14-336px.pt for the default) for cmmd and fd_clip; default: --clip-weights.",
    "Extractor of cmmd and fd_clip (clip-vit-l-14-336 as CMMD's paper, or clip-vit-l-14).",
)
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
    dinov2_weights,
    dinov2_extractor,
    clip_image_weights,
    clip_image_extractor,
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
    chosen = {
        INCEPTION_ROLE: (extractor, inception_weights),
        DINOV2_ROLE: (dinov2_extractor, dinov2_weights),
        CLIP_ROLE: (clip_image_extractor, clip_image_weights or clip_weights),
    }
    make_extractor, names_by_role = _extractor_maker(wanted, chosen, device, allow_unknown_inception)

    def make_clip():
        return create_extractor(clip_extractor, clip_weights, device)

    try:
        gen = _load_input("--gen", gen_path, make_extractor, make_clip if clip_score else None, caps, batch_size)
        gen = by_role(gen, names_by_role, "--gen")
        ref = None
        if ref_path and needs_ref:
            protocol = _ref_protocol(ref_path, ref_resolution, ref_crop, gen)
            ref = by_role(
                _load_input("--ref", ref_path, make_extractor, None, None, batch_size, protocol), names_by_role, "--ref"
            )
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
    results["provenance"] = _provenance(gen, ref, ci or bootstrap > 0, seed)
    results["provenance"].update(isc_splits=isc_splits, warnings=warnings)
    _print_results(results, warnings, as_json)


def _extractor_maker(wanted: list[str], chosen: dict, device: str, allow_unknown_inception: bool):
    """(make() -> {role: extractor} of the metrics `wanted`, each made once so that one decode feeds
    them all; {role: extractor name}). `chosen`: role -> (extractor name, weights file)."""
    roles = roles_for(wanted) or [INCEPTION_ROLE]
    cache = {}

    def make():
        for role in roles:
            if role not in cache:
                cache[role] = create_extractor(chosen[role][0], chosen[role][1], device)
                if role == INCEPTION_ROLE and not allow_unknown_inception:
                    check_known_weights(cache[role])
        return {role: cache[role] for role in roles}

    return make, {role: chosen[role][0] for role in roles}


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


def by_role(side, names: dict[str, str], flag: str) -> FeatureSets:
    """`side` as {role: features}: images were read through every role's extractor already; a
    statistics or feature file of one extractor fills the role whose extractor made it (or the only
    role asked for)."""
    if isinstance(side, FeatureSets):
        return side
    made_by = (getattr(side, "meta", None) or {}).get("extractor")
    roles = [role for role, name in names.items() if name == made_by] or (list(names) if len(names) == 1 else [])
    if not roles:
        raise click.ClickException(
            f"{flag}: a statistics file of {made_by}, but the metrics asked for need "
            f"{', '.join(names.values())}: pass a folder of images or an arr_0 .npz (read once through every extractor)"
        )
    return FeatureSets({role: side for role in roles})


def _provenance(gen, ref, ci, seed) -> dict:
    def ext(side):
        meta = getattr(side, "meta", {}) or {}
        keys = ("extractor", "extractor_sha256", "protocol")
        return {k: meta.get(k) for k in keys if k != "protocol" or meta.get(k)}

    def per_role(sides):
        one = {role: ext(side) for role, side in sides.items()}
        return one[INCEPTION_ROLE] if list(one) == [INCEPTION_ROLE] else one

    return {
        "gen": per_role(gen),
        "ref": per_role(ref) if ref is not None else None,
        "ci": ci,
        "seed": seed,
        "versions": package_versions(REFERENCE_PACKAGES),
    }


@click.command("coco-reference")
@click.option("--coco", "coco_dir", envvar="GLIDE_EVAL_COCO", help="MS-COCO folder (default: $GLIDE_EVAL_COCO).")
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
        click.echo(
            f"{path}: {stats.n} images, {stats.meta['extractor']} @ {resolution}px, "
            f"images sha256 {stats.meta['images_sha256'][:16]}... (the manifest of their content)"
        )


@click.command("coco-captions")
@click.option("--coco", "coco_dir", envvar="GLIDE_EVAL_COCO", help="MS-COCO folder (default: $GLIDE_EVAL_COCO).")
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
