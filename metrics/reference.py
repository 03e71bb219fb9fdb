"""Reference statistics: computed once from real images, cached with how they were made.

A `ReferenceStats` file (.npz, written atomically) holds the float64 mean and covariance
of the pool features, the per-sample pool features and their k-NN radii (for
precision/recall), and a metadata record: extractor name and weights sha256, image
resolution, crop rule, hash of the image-id list, k, the distance block size and package
versions. `cached_reference` reuses a file only when every metadata entry matches the
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

from metrics.features import FeatureAccumulator, FeatureError
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
                )
        except CorruptFileError:
            raise
        except LOAD_ERRORS as e:
            raise CorruptFileError(path, "reference statistics", e) from e

    def mismatches(self, expected: dict) -> dict:
        """{key: (cached, expected)} for every expected metadata entry that differs."""
        return {k: (self.meta.get(k), v) for k, v in expected.items() if self.meta.get(k) != v}


def reference_from_accumulator(
    acc: FeatureAccumulator, meta: dict, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> ReferenceStats:
    if acc.n_nan:
        raise FeatureError(f"{acc.n_nan} reference images gave NaN features")
    mu, sigma = acc.statistics()
    pool = acc.pool
    # too few samples for k-NN radii: precision/recall against this reference will say so
    radii = None if pool is None or len(pool) <= k else knn_radii(pool, k, batch_size).numpy()
    full_meta = {
        "extractor": acc.meta.get("extractor"),
        "extractor_sha256": acc.meta.get("extractor_sha256"),
        "k": k,
        "prc_batch_size": batch_size,
        "versions": package_versions(REFERENCE_PACKAGES),
    }
    full_meta.update(meta)
    return ReferenceStats(mu=mu, sigma=sigma, n=acc.n, pool=pool, radii=radii, meta=full_meta)


def build_reference(
    batches: Iterable, extractor, meta: dict, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> ReferenceStats:
    """Statistics of uint8 [N,3,H,W] image batches through `extractor`."""
    acc = FeatureAccumulator(extractor)
    for images in batches:
        acc.add(images)
    return reference_from_accumulator(acc, meta, k, batch_size)


def expected_meta(extractor, **entries) -> dict:
    """The metadata a cache must carry to be reused with this extractor and these entries."""
    return {
        "extractor": extractor.name,
        "extractor_sha256": extractor.weights_sha256,
        "versions": package_versions(REFERENCE_PACKAGES),
        **entries,
    }


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
            log(
                f"reference cache {path} is stale "
                f"({', '.join(f'{k}: {a!r} != {b!r}' for k, (a, b) in diff.items())}); recomputing"
            )
    stats = build()
    stats.save(path)
    return stats
