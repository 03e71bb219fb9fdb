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
from metrics.features import FeatureError
from metrics.reference import ReferenceStats, build_reference, cached_reference, expected_meta
from storage import CorruptFileError

# metadata a user's reference must share with the sweep: features comparable at all
MUST_MATCH = ("extractor", "extractor_sha256", "resolution")
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


def recorded(stats: ReferenceStats, given: str) -> dict:
    """What the provenance records of the reference used."""
    return {"path": given or None, "user_file": bool(given), "n": int(stats.n), "meta": stats.meta}


def toy_expected(extractor, **meta) -> dict:
    expected = expected_meta(extractor, **meta)
    expected.pop("versions", None)  # the toy cache was always reused across package versions
    return expected


def coco_reference_stats(config: SweepConfig, extractor, log: Log = _stderr) -> ReferenceStats:
    """Statistics of the MS-COCO validation images at the sample resolution, centre-cropped (the
    first [metrics.reference_n] images by id, or all): the user's file, or the sweep's cache."""
    root = config.captions.path or None
    resolution, crop = config.sampler.resolution, "center"
    try:
        layout = coco.find_coco(root)
        ids = coco.image_ids(layout)
        if config.metrics.reference_n:
            ids = ids[: config.metrics.reference_n]
        meta = coco.reference_meta(layout, resolution, ids, crop)

        def build():
            return build_reference(coco.reference_batches(layout, resolution, ids, crop), extractor, meta)

        default = coco.default_reference_path(layout, resolution, extractor.name, crop)
        return reference_stats(config.metrics.reference, default, expected_meta(extractor, **meta), build, log)
    except coco.CocoError as e:
        raise MissingComponentError(f"[captions.path] {e}") from None
