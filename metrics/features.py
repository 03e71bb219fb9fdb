"""Streaming feature accumulation: feed image batches as they are generated, keep only features.

`FeatureAccumulator` keeps, for one set of images:

- float64 running mean and centred outer-product sum of the pool features (Chan et al.'s
  pairwise update: exact merge of shards, no cancellation of a raw second moment);
- the per-sample pool features (float32, for precision/recall), unbiased logits
  (float32, for the Inception Score) and CLIP scores (float64), in sample order;
- counts: samples, rows with NaN features (dropped, never averaged in), truncated captions;
- ``meta["image_sizes"]``: the distinct [H, W] of the images fed through `add` (sorted), so a
  metric can tell when generated images and reference statistics differ in resolution.

A shard's state is saved atomically (`save`, .npz) and shards merge in order (`merge`):
the merged state equals the state of one accumulator fed every batch.
"""

from __future__ import annotations

import json
import os

import numpy as np

from metrics.clip_score import clip_scores
from storage import LOAD_ERRORS, CorruptFileError, save_npz

FORMAT = "glide-eval-features/1"


class FeatureError(ValueError):
    """Features that cannot be used: wrong shapes, mismatched extractors, NaNs, bad files."""


class FeatureAccumulator:
    def __init__(self, extractor=None, clip=None, keep_pool: bool = True, meta: dict | None = None):
        """`extractor`: an image extractor (see metrics.extractors) or None when features are
        added directly; `clip`: a CLIP-like scorer or None; `keep_pool`: keep per-sample pool
        features (needed for precision/recall and FID bootstrap)."""
        self.extractor = extractor
        self.clip = clip
        self.keep_pool = keep_pool
        self.meta = {
            "extractor": getattr(extractor, "name", None),
            "extractor_sha256": getattr(extractor, "weights_sha256", None),
            "clip": getattr(clip, "name", None),
            "clip_sha256": getattr(clip, "weights_sha256", None),
        }
        self.meta.update(meta or {})
        self.n = 0
        self.n_nan = 0
        self.n_truncated = 0
        self.mean = None
        self.m2 = None
        self._pool: list[np.ndarray] = []
        self._logits: list[np.ndarray] = []
        self._clip: list[np.ndarray] = []

    # -- feeding ---------------------------------------------------------------------------
    def add(self, images, captions: list[str] | None = None) -> None:
        """Extract features of a uint8 [N, 3, H, W] batch (and CLIP scores against captions)."""
        if self.extractor is None:
            raise FeatureError("this accumulator has no extractor: use add_features")
        feats = self.extractor(images)
        self._note_size(tuple(int(x) for x in images.shape[-2:]))
        scores, n_trunc = None, 0
        if self.clip is not None:
            if captions is None:
                raise FeatureError("a CLIP scorer is set but no captions were given")
            scores, n_trunc = clip_scores(self.clip, images, captions)
        self.add_features(feats["pool"], feats.get("logits_unbiased"), scores, n_trunc)

    def add_features(self, pool, logits=None, clip_scores=None, n_truncated: int = 0) -> None:
        """Add precomputed per-sample features; rows with any NaN/inf are counted and dropped."""
        pool = np.asarray(pool, dtype=np.float32)
        if pool.ndim != 2:
            raise FeatureError(f"pool features must be [N, D], got {pool.shape}")
        n = pool.shape[0]
        ok = np.isfinite(pool).all(axis=1)
        if logits is not None:
            logits = np.asarray(logits, dtype=np.float32)
            if logits.ndim != 2 or logits.shape[0] != n:
                raise FeatureError(f"logits must be [{n}, K], got {logits.shape}")
            ok &= np.isfinite(logits).all(axis=1)
        if clip_scores is not None:
            clip_scores = np.asarray(clip_scores, dtype=np.float64).reshape(-1)
            if clip_scores.shape[0] != n:
                raise FeatureError(f"{clip_scores.shape[0]} CLIP scores for {n} samples")
            ok &= np.isfinite(clip_scores)
        if self.n and ((logits is None) != (not self._logits) or (clip_scores is None) != (not self._clip)):
            raise FeatureError("every batch must carry the same features (logits / CLIP scores) as the first")
        if self.mean is not None and pool.shape[1] != self.mean.shape[0]:
            raise FeatureError(f"pool feature dim {pool.shape[1]} differs from earlier batches ({self.mean.shape[0]})")
        self.n_nan += int(n - ok.sum())
        self.n_truncated += int(n_truncated)
        if not ok.all():
            pool = pool[ok]
            logits = None if logits is None else logits[ok]
            clip_scores = None if clip_scores is None else clip_scores[ok]
        if pool.shape[0] == 0:
            return
        x = pool.astype(np.float64)
        mean_b = x.mean(axis=0)
        c = x - mean_b
        self._merge_moments(pool.shape[0], mean_b, c.T @ c)
        if self.keep_pool:
            self._pool.append(pool)
        if logits is not None:
            self._logits.append(logits)
        if clip_scores is not None:
            self._clip.append(clip_scores)

    def _note_size(self, size) -> None:
        sizes = {tuple(s) for s in self.meta.get("image_sizes") or []} | {tuple(size)}
        self.meta["image_sizes"] = [list(s) for s in sorted(sizes)]

    def _merge_moments(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.mean = self.mean + delta * (n_b / n)
        self.n = n

    # -- results ---------------------------------------------------------------------------
    @property
    def pool(self) -> np.ndarray | None:
        return _cat(self._pool)

    @property
    def logits(self) -> np.ndarray | None:
        return _cat(self._logits)

    @property
    def clip_scores(self) -> np.ndarray | None:
        return _cat(self._clip)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, unbiased covariance) in float64; refuses fewer than 2 samples."""
        if self.n < 2:
            raise FeatureError(f"FID needs at least 2 samples, got {self.n}")
        return self.mean, self.m2 / (self.n - 1)

    # -- shards ----------------------------------------------------------------------------
    def merge(self, other: FeatureAccumulator) -> FeatureAccumulator:
        """Append another shard's state (in place; returns self)."""
        for key in ("extractor", "extractor_sha256", "clip", "clip_sha256"):
            a, b = self.meta.get(key), other.meta.get(key)
            if a is not None and b is not None and a != b:
                raise FeatureError(f"cannot merge shards made with different {key}: {a} vs {b}")
            if a is None:
                self.meta[key] = b
        for size in other.meta.get("image_sizes") or []:
            self._note_size(size)
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2)
        self.n_nan += other.n_nan
        self.n_truncated += other.n_truncated
        self._pool += other._pool
        self._logits += other._logits
        self._clip += other._clip
        return self

    def save(self, path: str | os.PathLike) -> None:
        arrays = {
            "meta": np.array(
                json.dumps(
                    {
                        "format": FORMAT,
                        **self.meta,
                        "n": self.n,
                        "n_nan": self.n_nan,
                        "n_truncated": self.n_truncated,
                        "keep_pool": self.keep_pool,
                    }
                )
            )
        }
        if self.n:
            arrays.update(mean=self.mean, m2=self.m2)
        for name in ("pool", "logits", "clip_scores"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        save_npz(path, arrays, compress=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureAccumulator:
        """A saved state; `CorruptFileError` naming `path` when it cannot be read."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT:
                    raise CorruptFileError(
                        path, "feature state", f"not a glide-eval feature state (format {meta.get('format')!r})"
                    )
                acc = cls(
                    keep_pool=meta["keep_pool"],
                    meta={k: meta.get(k) for k in ("extractor", "extractor_sha256", "clip", "clip_sha256")},
                )
                if meta.get("image_sizes"):
                    acc.meta["image_sizes"] = meta["image_sizes"]
                acc.n, acc.n_nan, acc.n_truncated = meta["n"], meta["n_nan"], meta["n_truncated"]
                if acc.n:
                    acc.mean, acc.m2 = data["mean"], data["m2"]
                for name, target in (("pool", acc._pool), ("logits", acc._logits), ("clip_scores", acc._clip)):
                    if name in data.files:
                        target.append(data[name])
        except CorruptFileError:
            raise
        except LOAD_ERRORS as e:
            raise CorruptFileError(path, "feature state", e) from e
        return acc

    @classmethod
    def merged(cls, paths) -> FeatureAccumulator:
        """Load shard files and merge them in the given order."""
        paths = list(paths)
        if not paths:
            raise FeatureError("no shard files to merge")
        acc = cls.load(paths[0])
        for p in paths[1:]:
            acc.merge(cls.load(p))
        return acc


def _cat(chunks: list[np.ndarray]):
    if not chunks:
        return None
    if len(chunks) > 1:
        chunks[:] = [np.concatenate(chunks)]
    return chunks[0]
