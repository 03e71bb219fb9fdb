"""Reference statistics: computed once from real images, cached with how they were made.

A `ReferenceStats` file (.npz, written atomically) holds the float64 mean and covariance
of the pool features, the per-sample pool features and their k-NN radii (for
precision/recall), and a metadata record: extractor name and weights sha256, image
resolution, crop rule, hash of the image-id list, a fingerprint of the images' content
(`images_sha256`, where the caller gives one: an image changed under the same name), k, the
distance block size and package versions. `cached_reference` reuses a file only when every metadata entry matches the
expected one; otherwise it rebuilds it (and says why in one line), never reusing a stale cache.
A file that cannot be read at all (truncated, a flipped byte: `CorruptFileError`) is rebuilt the
same way when it is a cache, and an error naming it when the caller says it is the user's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from metrics.cmmd import SIGMA as CMMD_SIGMA
from metrics.cmmd import reference_term
from metrics.density_coverage import DEFAULT_K as DC_K
from metrics.density_coverage import real_radii
from metrics.features import FeatureAccumulator, FeatureError, FeatureSets
from metrics.names import CLIP_ROLE, DINOV2_ROLE, INCEPTION_ROLE
from metrics.prc import DEFAULT_BATCH, DEFAULT_K, knn_radii
from storage import LOAD_ERRORS, CorruptFileError, package_versions, save_npz

FORMAT = "glide-eval-reference/1"


# the packages whose versions a reference records (a cache made under others is rebuilt)
REFERENCE_PACKAGES = ("glide-eval", "torch", "torch-fidelity", "open-clip-torch", "numpy", "pillow")


def ids_sha256(ids: Iterable) -> str:
    """Hash of an ordered image-id list (one id per line)."""
    return hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest()


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    pool: np.ndarray | None = None
    radii: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    dc_radii: np.ndarray | None = None  # density/coverage k-NN radii (k = meta["dc_k"])

    def save(self, path) -> None:
        arrays = {
            "meta": np.array(json.dumps({"format": FORMAT, "n": self.n, **self.meta}, sort_keys=True)),
            "mu": self.mu,
            "sigma": self.sigma,
        }
        if self.pool is not None:
            arrays["pool"] = self.pool
        if self.radii is not None:
            arrays["radii"] = self.radii
        if self.dc_radii is not None:
            arrays["dc_radii"] = self.dc_radii
        save_npz(path, arrays, compress=False)

    @classmethod
    def load(cls, path) -> ReferenceStats:
        """Statistics saved by `save`; `CorruptFileError` naming `path` when it cannot be read."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.pop("format", None) != FORMAT:
                    raise CorruptFileError(path, "reference statistics", "not a glide-eval reference statistics file")
                n = meta.pop("n")
                return cls(
                    mu=data["mu"],
                    sigma=data["sigma"],
                    n=n,
                    pool=data["pool"] if "pool" in data.files else None,
                    radii=data["radii"] if "radii" in data.files else None,
                    meta=meta,
                    dc_radii=data["dc_radii"] if "dc_radii" in data.files else None,
                )
        except CorruptFileError:
            raise
        except LOAD_ERRORS as e:
            raise CorruptFileError(path, "reference statistics", e) from e

    def mismatches(self, expected: dict) -> dict:
        """{key: (cached, expected)} for every expected metadata entry that differs."""
        return {k: (self.meta.get(k), v) for k, v in expected.items() if self.meta.get(k) != v}


def reference_from_accumulator(
    acc: FeatureAccumulator, meta: dict, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH, role: str = INCEPTION_ROLE
) -> ReferenceStats:
    """The reference statistics of `acc`, with what the metrics of extractor `role` reuse cached:
    precision/recall's k-NN radii (inception), density/coverage's (dinov2), CMMD's reference term
    (clip)."""
    if acc.n_nan:
        raise FeatureError(f"{acc.n_nan} reference images gave NaN features")
    mu, sigma = acc.statistics()
    pool = acc.pool
    full_meta = {
        "extractor": acc.meta.get("extractor"),
        "extractor_sha256": acc.meta.get("extractor_sha256"),
        "versions": package_versions(REFERENCE_PACKAGES),
    }
    if acc.meta.get("protocol"):
        full_meta["protocol"] = acc.meta["protocol"]
    radii = dc_radii = None
    # too few samples for k-NN radii: the metrics against this reference will say so
    if role == INCEPTION_ROLE:
        radii = None if pool is None or len(pool) <= k else knn_radii(pool, k, batch_size).numpy()
        full_meta.update(k=k, prc_batch_size=batch_size)
    elif role == DINOV2_ROLE and pool is not None and len(pool) > DC_K:
        dc_radii = real_radii(pool, DC_K)
        full_meta["dc_k"] = DC_K
    elif role == CLIP_ROLE and pool is not None and len(pool) > 1:
        full_meta["cmmd_reference_term"] = {"sigma": CMMD_SIGMA, "unbiased": True, "value": reference_term(pool)}
    full_meta.update(meta)
    return ReferenceStats(mu=mu, sigma=sigma, n=acc.n, pool=pool, radii=radii, meta=full_meta, dc_radii=dc_radii)


def build_reference(
    batches: Iterable, extractor, meta: dict, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> ReferenceStats:
    """Statistics of uint8 [N,3,H,W] image batches through `extractor`."""
    return build_references(batches, {INCEPTION_ROLE: extractor}, meta, k, batch_size)[INCEPTION_ROLE]


def build_references(
    batches: Iterable, extractors: dict, meta: dict, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> dict[str, ReferenceStats]:
    """{role: statistics} of uint8 [N,3,H,W] image batches through every role's extractor, each
    batch decoded once and fed to all of them."""
    sets = FeatureSets.of(extractors)
    for images in batches:
        sets.add(images)
    return {role: reference_from_accumulator(acc, meta, k, batch_size, role) for role, acc in sets.items()}


def expected_meta(extractor, **entries) -> dict:
    """The metadata a cache must carry to be reused with this extractor and these entries
    (with its preprocessing protocol, for the extractors that name one)."""
    protocol = getattr(extractor, "protocol", None)
    return {
        "extractor": extractor.name,
        "extractor_sha256": extractor.weights_sha256,
        **({"protocol": protocol} if protocol else {}),
        "versions": package_versions(REFERENCE_PACKAGES),
        **entries,
    }


# what a differing metadata entry means, in words
STALE_REASONS = {
    "images_sha256": "the images' content changed (an image replaced, edited or re-encoded under its name)",
    "image_ids_sha256": "another list of images",
    "extractor_sha256": "other feature-extractor weights",
    "versions": "other package versions",
}


def stale_reasons(diff: dict) -> str:
    """'KEY: cached != expected' per differing entry, with what it means where `STALE_REASONS` says
    (an entry the cached file lacks: made before glide-eval recorded it, nothing changed)."""

    def meaning(key, cached) -> str:
        if cached is None:
            return ": not recorded in the cached file (made by an older glide-eval)"
        return f": {STALE_REASONS[key]}" if key in STALE_REASONS else ""

    return "; ".join(f"{k}: {a!r} != {b!r}{meaning(k, a)}" for k, (a, b) in diff.items())


def cached_reference(
    path, expected: dict, build: Callable[[], ReferenceStats], log=print, rebuild_unreadable: bool = True
) -> ReferenceStats:
    """Load `path` if its metadata matches `expected`; else build, save atomically, return.

    Under the cache's lock (``PATH.lock``, where the folder is writable): concurrent callers
    build it once, and temporary files of a killed build of `path` are removed. A file that
    cannot be read is rebuilt with a one-line warning, or, with `rebuild_unreadable=False` (a
    file the user named), raises `CorruptFileError`."""
    path = Path(path)
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(blocking=False)
    except Timeout:
        log(f"waiting for {path}.lock (another process is building or reading {path})")
        lock.acquire()
    except OSError:  # a read-only folder: nothing is written there, so nothing to guard
        lock = None
    try:
        if lock is not None:
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):  # only a holder of this lock writes them
                tmp.unlink(missing_ok=True)
        return _load_or_build(path, expected, build, log, rebuild_unreadable)
    finally:
        if lock is not None:
            lock.release()


def _load_or_build(path: Path, expected: dict, build, log, rebuild_unreadable: bool) -> ReferenceStats:
    if path.exists():
        try:
            stats = ReferenceStats.load(path)
        except CorruptFileError as e:
            if not rebuild_unreadable:
                raise
            log(f"warning: {e}; rebuilding it")
        else:
            diff = stats.mismatches(expected)
            if not diff:
                return stats
            log(f"reference cache {path} is stale ({stale_reasons(diff)}); recomputing")
    stats = build()
    stats.save(path)
    return stats
