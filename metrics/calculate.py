"""One entry point for every metric (torch-fidelity style): `calculate_metrics`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics import bootstrap as boot
from metrics.clip_score import clip_cosines  # noqa: F401  (re-exported for callers)
from metrics.features import FeatureAccumulator, FeatureError
from metrics.fid import factor, frechet_distance, gaussian_statistics, trace_sqrt_product
from metrics.inception_score import inception_score
from metrics.prc import DEFAULT_BATCH, DEFAULT_K, knn_radii, precision_recall_hits
from metrics.reference import ReferenceStats


@dataclass
class _Side:
    n: int
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    pool: np.ndarray | None = None
    radii: np.ndarray | None = None
    logits: np.ndarray | None = None
    clip_scores: np.ndarray | None = None
    n_nan: int = 0
    n_truncated: int = 0
    extractor: str | None = None
    extractor_sha256: str | None = None
    label: str = ""


def _side(x, label: str) -> _Side:
    if isinstance(x, _Side):
        return x
    if isinstance(x, ReferenceStats):
        return _Side(n=x.n, mu=x.mu, sigma=x.sigma, pool=x.pool, radii=x.radii, label=label,
                     extractor=x.meta.get("extractor"), extractor_sha256=x.meta.get("extractor_sha256"))
    if isinstance(x, dict):
        acc = FeatureAccumulator(meta={"extractor": x.get("extractor"), "extractor_sha256": x.get("extractor_sha256")})
        acc.add_features(x["pool"], x.get("logits_unbiased"), x.get("clip_scores"), x.get("n_truncated", 0))
        x = acc
    if isinstance(x, FeatureAccumulator):
        mu = sigma = None
        if x.n >= 2:
            mu, sigma = x.statistics()
        return _Side(n=x.n, mu=mu, sigma=sigma, pool=x.pool, logits=x.logits, clip_scores=x.clip_scores,
                     n_nan=x.n_nan, n_truncated=x.n_truncated, extractor=x.meta.get("extractor"),
                     extractor_sha256=x.meta.get("extractor_sha256"), label=label)
    raise TypeError(f"{label}: expected FeatureAccumulator, ReferenceStats or feature dict, got {type(x).__name__}")


def _need(value, what: str, side: _Side):
    if value is None:
        raise FeatureError(f"{side.label}: {what} not available")
    return value


def calculate_metrics(gen, ref=None, fid: bool = True, isc: bool = True, prc: bool = True,
                      clip_score: bool = False, k: int = DEFAULT_K, prc_batch_size: int = DEFAULT_BATCH,
                      isc_splits: int = 10, isc_convention: str = "torch-fidelity", isc_seed: int = 2020,
                      bootstrap: int = 0, seed: int = 0, level: float = 0.95, allow_nan: bool = False) -> dict:
    """Metrics of generated features `gen` against reference `ref`.

    gen: `FeatureAccumulator` (merged shards) or dict {"pool", "logits_unbiased", "clip_scores"};
    ref: `ReferenceStats` (cached, with k-NN radii), `FeatureAccumulator` or dict; only FID
    and precision/recall need it. Returns {"fid", "is", "is_std", "precision", "recall",
    "clip_score", "clip_truncated", "n_gen", "n_ref", "n_nan"} for the requested metrics and,
    with `bootstrap` > 0, "<metric>_ci_low"/"<metric>_ci_high" (seeded percentile intervals).
    """
    g = _side(gen, "generated")
    r = _side(ref, "reference") if ref is not None else None
    if g.n_nan and not allow_nan:
        raise FeatureError(f"generated: {g.n_nan} of {g.n + g.n_nan} samples have NaN/inf features")
    out: dict = {"n_gen": g.n, "n_nan": g.n_nan}
    if (fid or prc) and r is None:
        raise FeatureError("FID and precision/recall need a reference")
    if r is not None:
        out["n_ref"] = r.n
        if r.extractor and g.extractor and (r.extractor, r.extractor_sha256) != (g.extractor, g.extractor_sha256):
            raise FeatureError(f"generated features come from {g.extractor} ({g.extractor_sha256}) but the "
                               f"reference from {r.extractor} ({r.extractor_sha256})")
    rng_seed = seed

    if fid:
        mu_g, sig_g = _need(g.mu, "statistics (>= 2 samples)", g), g.sigma
        mu_r, sig_r = _need(r.mu, "statistics", r), r.sigma
        if mu_g.shape != mu_r.shape:
            raise FeatureError(f"feature dims differ: generated {mu_g.shape[0]} vs reference {mu_r.shape[0]}")
        out["fid"] = frechet_distance(mu_r, sig_r, mu_g, sig_g)
        if bootstrap:
            pool = _need(g.pool, "per-sample pool features (for the FID bootstrap)", g).astype(np.float64)
            root = factor(sig_r)  # once: the reference side is fixed
            tr_r = np.trace(sig_r)

            def fid_of(idx):
                mu, sig = gaussian_statistics(pool[idx])
                d = mu - mu_r
                return float(d @ d + tr_r + np.trace(sig) - 2 * trace_sqrt_product(root, sig))

            out["fid_ci_low"], out["fid_ci_high"] = boot.bootstrap(g.n, fid_of, bootstrap, rng_seed, level)

    if isc:
        logits = _need(g.logits, "logits_unbiased (for the Inception Score)", g)
        out["is"], out["is_std"] = inception_score(logits, isc_splits, True, isc_seed, isc_convention)
        if bootstrap:
            out["is_ci_low"], out["is_ci_high"] = boot.bootstrap(
                g.n, lambda i: inception_score(logits[i], isc_splits, True, isc_seed, isc_convention)[0],
                bootstrap, rng_seed + 1, level)

    if prc:
        gen_pool = _need(g.pool, "per-sample pool features (for precision/recall)", g)
        ref_pool = _need(r.pool, "per-sample pool features (for precision/recall)", r)
        if gen_pool.shape[1] != ref_pool.shape[1]:
            raise FeatureError(f"feature dims differ: generated {gen_pool.shape[1]} vs reference {ref_pool.shape[1]}")
        ref_radii = r.radii
        ref_prc = (ref.meta.get("k"), ref.meta.get("prc_batch_size")) if isinstance(ref, ReferenceStats) else None
        if ref_prc is not None and ref_prc != (k, prc_batch_size):
            ref_radii = None  # cached for another k or block size
        if ref_radii is None:
            ref_radii = knn_radii(ref_pool, k, prc_batch_size)
        gen_hit, real_hit = precision_recall_hits(gen_pool, ref_pool, None, ref_radii, k, prc_batch_size)
        out["precision"], out["recall"] = float(gen_hit.mean()), float(real_hit.mean())
        if bootstrap:
            gh, rh = gen_hit.astype(np.float64), real_hit.astype(np.float64)
            out["precision_ci_low"], out["precision_ci_high"] = boot.bootstrap(
                len(gh), lambda i: gh[i].mean(), bootstrap, rng_seed + 2, level)
            out["recall_ci_low"], out["recall_ci_high"] = boot.bootstrap(
                len(rh), lambda i: rh[i].mean(), bootstrap, rng_seed + 3, level)

    if clip_score:
        scores = _need(g.clip_scores, "CLIP scores", g)
        out["clip_score"] = float(np.mean(scores))
        out["clip_truncated"] = g.n_truncated
        if bootstrap:
            out["clip_score_ci_low"], out["clip_score_ci_high"] = boot.bootstrap(
                len(scores), lambda i: scores[i].mean(), bootstrap, rng_seed + 4, level)
    return out
