"""The reference statistics of a sweep: a cache the sweep owns, or a file the user gave.

- `[metrics] reference` empty: the statistics live in `$GLIDE_EVAL_CACHE` and are rebuilt
  whenever their metadata differs from what this sweep would build (a stale cache) or the
  file cannot be read (a damaged cache, with a one-line warning).
- `[metrics] reference = FILE` that does not exist yet: built there once (under ``FILE.lock``).
- `[metrics] reference = FILE` that exists: the user's file, **used as given and never
  overwritten**. One that cannot be read (truncated, damaged) is an error naming it; one made
  with another feature extractor (name or weights sha256) or at another image resolution is
  refused, naming the difference (its features cannot be compared with the samples'); other
  differences (another image-id list, crop rule, number of images, data set: e.g.
  `coco-reference --ids` or `--crop adm`) are logged as warnings.
  Its metadata is recorded in the run's provenance (run.json, `provenance.reference`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from glide_eval.data import coco
from glide_eval.sweep.config import SweepConfig
from glide_eval.sweep.errors import MissingComponentError
from metrics.features import FeatureError, FeatureSets
from metrics.names import INCEPTION_ROLE
from metrics.reference import ReferenceStats, build_references, cached_reference, expected_meta
from storage import CorruptFileError

# metadata a user's reference must share with the sweep: features comparable at all
MUST_MATCH = ("extractor", "extractor_sha256", "protocol", "resolution")
NOT_COMPARED = ("versions",)  # a package upgrade does not invalidate real-image statistics

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def user_reference(path: Path, expected: dict, log: Log) -> ReferenceStats:
    """The user's reference file as given; MissingComponentError when it is unreadable or was made
    with another extractor or resolution; a logged warning for any other metadata difference."""
    try:
        stats = ReferenceStats.load(path)
    except (FeatureError, CorruptFileError) as e:
        raise MissingComponentError(f"[metrics.reference] {e} (the file is left as it is)") from None
    diff = stats.mismatches({k: v for k, v in expected.items() if k not in NOT_COMPARED})
    fatal = {k: v for k, v in diff.items() if k in MUST_MATCH}
    if fatal:
        raise MissingComponentError(
            f"[metrics.reference] {path} was made with other features than this sweep's ("
            + "; ".join(f"{k}: file {a!r}, sweep {b!r}" for k, (a, b) in fatal.items())
            + "), so no metric against it would mean anything. Give another file, or leave "
            "[metrics] reference empty to use the sweep's own cache. The file is left as it is."
        )
    if diff:
        log(
            f"warning: reference {path} is used as given although it differs from what this sweep would "
            "build (" + "; ".join(f"{k}: file {a!r}, sweep {b!r}" for k, (a, b) in diff.items()) + ")"
        )
    return stats


def reference_stats(
    given: str, default_path: Path, expected: dict, build: Callable[[], ReferenceStats], log: Log = _stderr
) -> ReferenceStats:
    """The statistics for a sweep: see the module docstring. `given` is `[metrics] reference`."""
    if not given:
        return cached_reference(str(default_path), expected, build, log=log)
    path = Path(given)
    if path.exists():
        return user_reference(path, expected, log)
    return _build_user_file(path, expected, build, log)


def _build_user_file(path: Path, expected: dict, build: Callable[[], ReferenceStats], log: Log) -> ReferenceStats:
    """Build the user's not-yet-existing reference file once, under ``PATH.lock`` (as the caches
    are, `metrics.reference.cached_reference`): a concurrent sweep that built it first wins, and
    its file is then the user's, used as given."""
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise MissingComponentError(f"[metrics.reference] cannot create {path} ({e.strerror or e})") from None
    try:
        if path.exists():
            return user_reference(path, expected, log)
        stats = build()
        stats.save(path)
        return stats
    finally:
        lock.release()


def recorded(stats, given: str) -> dict:
    """What the provenance records of the reference used (with other extractors' statistics, a
    `FeatureSets`: the Inception one's, and under "extractors" each role's metadata)."""
    if isinstance(stats, FeatureSets):
        out = recorded(stats[INCEPTION_ROLE], given)
        out["extractors"] = {
            role: {"n": int(s.n), "meta": s.meta} for role, s in stats.items() if role != INCEPTION_ROLE
        }
        return out
    return {
        "path": given or None,
        "user_file": bool(given),
        "n": int(stats.n),
        "images_sha256": stats.meta.get("images_sha256"),  # the images' content fingerprint (None: not recorded)
        "meta": stats.meta,
    }


def toy_expected(extractor, **meta) -> dict:
    expected = expected_meta(extractor, **meta)
    expected.pop("versions", None)  # the toy cache was always reused across package versions
    return expected


def _coco_images(config: SweepConfig):
    """(layout, ids, resolution, crop, meta) of the MS-COCO reference images a sweep measures against:
    the first [metrics.reference_n] validation images by id, or all, centre-cropped."""
    layout = coco.find_coco(config.captions.path or None)
    ids = coco.image_ids(layout)
    if config.metrics.reference_n:
        ids = ids[: config.metrics.reference_n]
    resolution, crop = config.sampler.resolution, "center"
    return layout, ids, resolution, crop, coco.reference_meta(layout, resolution, ids, crop, progress=True)


def role_references(
    extractor,
    extras: dict,
    inception: Callable[[Callable[[], ReferenceStats]], ReferenceStats],
    cached: Callable[[object, Callable[[], ReferenceStats]], ReferenceStats],
    build_all: Callable[[dict], dict],
):
    """The Inception statistics (`inception(build)`) alone, or with extractors `extras` ({role:
    extractor}) a `FeatureSets` of every role's statistics, each cached in its own file
    (`cached(extractor, build)`). Whatever is missing or stale is built together: the reference
    images are decoded once for every extractor (`build_all({role: extractor})` -> {role: stats})."""
    extractors = {INCEPTION_ROLE: extractor, **extras}
    built: dict = {}

    def build(role):
        def make():
            if role not in built:
                built.update(build_all(extractors))
            return built[role]

        return make

    stats = inception(build(INCEPTION_ROLE))
    if not extras:
        return stats
    return FeatureSets({INCEPTION_ROLE: stats, **{role: cached(ext, build(role)) for role, ext in extras.items()}})


def coco_reference_stats(config: SweepConfig, extractor, log: Log = _stderr, extras: dict | None = None):
    """Statistics of the MS-COCO validation images at the sample resolution, centre-cropped (the
    first [metrics.reference_n] images by id, or all): the user's file, or the sweep's cache; with
    `extras` ({role: extractor}: DINOv2, CLIP image tower) a `FeatureSets` of every role's
    (`role_references`)."""
    try:
        layout, ids, resolution, crop, meta = _coco_images(config)

        def build_all(extractors):
            return build_references(coco.reference_batches(layout, resolution, ids, crop), extractors, meta)

        def cached(ext, build):
            path = coco.default_reference_path(layout, resolution, ext.name, crop)
            return cached_reference(str(path), expected_meta(ext, **meta), build, log=log)

        default = coco.default_reference_path(layout, resolution, extractor.name, crop)
        return role_references(
            extractor,
            extras or {},
            lambda build: reference_stats(
                config.metrics.reference, default, expected_meta(extractor, **meta), build, log
            ),
            cached,
            build_all,
        )
    except coco.CocoError as e:
        raise MissingComponentError(f"[captions.path] {e}") from None


def check_coco_images(config: SweepConfig, extractor_name: str) -> None:
    """The pre-flight's check of the MS-COCO reference images when the feature extractor could not be
    loaded (so the statistics cannot be built now): every image the statistics would need decoded,
    unless a `[metrics] reference` file exists or the sweep's cache was built from these very
    images (same ids, content fingerprint, resolution and crop). MissingComponentError listing
    every missing or unreadable image."""
    if config.captions.source != "coco" or (config.metrics.reference and Path(config.metrics.reference).exists()):
        return
    try:
        layout, ids, resolution, crop, meta = _coco_images(config)
        if not config.metrics.reference:
            try:
                cached = ReferenceStats.load(coco.default_reference_path(layout, resolution, extractor_name, crop))
                if not cached.mismatches(meta):
                    return
            except (FeatureError, CorruptFileError):  # absent or unreadable: it will be built
                pass
        coco.check_images(layout, resolution, ids, crop, progress=True)
    except coco.CocoError as e:
        raise MissingComponentError(f"[captions.path] {e}") from None
