"""FID extrapolated to infinitely many generated samples (Chong & Forsyth, CVPR 2020).

FID's bias is, to first order, proportional to 1/N. FID∞ computes FID on `points` subsets of
sizes N_1 < ... < N_K = n (evenly spaced from `n_min`, default n/6: 5,000 of 30,000 as the
paper's 5k..50k), fits FID_N = a + b/N by least squares and reports the intercept a. The
subsets are nested prefixes of one seeded permutation (statistics updated once over the
samples, one eigendecomposition per size), reference statistics fixed.

Interval: the intercept is a fixed linear combination sum_k w_k FID_{N_k}; each FID_{N_k}
moves by mean over its prefix of FID's influence values (`metrics.influence.fid_influence`,
evaluated once at all n samples), so sample i carries n * psi_i * sum_{k: i in prefix k} w_k / N_k.
"""

from __future__ import annotations

import numpy as np

from metrics.features import FeatureAccumulator
from metrics.fid import frechet_distance
from metrics.influence import fid_influence


def subset_sizes(n: int, points: int = 15, n_min: int | None = None) -> np.ndarray:
    n_min = max(2, n // 6) if n_min is None else n_min
    if points < 2 or n_min >= n or n_min < 2:
        raise ValueError(f"FID∞ needs >= 2 subset sizes between n_min and n, got points={points}, n_min={n_min}, n={n}")
    sizes = np.unique(np.linspace(n_min, n, points).astype(int))
    if len(sizes) < 2:
        raise ValueError(f"FID∞: only {len(sizes)} distinct subset size(s) for n={n}")
    return sizes


def intercept_weights(sizes) -> np.ndarray:
    """w with w·y = intercept of the least-squares line y = a + b/N through (1/sizes, y)."""
    a = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, np.float64)], axis=1)
    return np.linalg.pinv(a)[0]


def fid_infinity(pool, mu_r, sigma_r, points: int = 15, n_min: int | None = None, seed: int = 0) -> dict:
    """{"fid_infinity", "sizes", "fids" (FID of each prefix), "psi" [n] in the original order}."""
    pool = np.asarray(pool, dtype=np.float32)
    n = len(pool)
    sizes = subset_sizes(n, points, n_min)
    order = np.random.default_rng(seed).permutation(n)
    acc = FeatureAccumulator(keep_pool=False)
    fids, start = [], 0
    for size in sizes:
        acc.add_features(pool[order[start:size]])
        start = size
        mu, sigma = acc.statistics()
        fids.append(frechet_distance(mu_r, sigma_r, mu, sigma))
    w = intercept_weights(sizes)
    value = float(w @ np.asarray(fids))
    psi_full = fid_influence(pool, mu, sigma, mu_r, sigma_r)  # statistics of all n (the last prefix)
    # weight of the sample at permuted position p: sum over prefixes that contain it of w_k / N_k
    per_prefix = w / sizes
    tail = np.cumsum(per_prefix[::-1])[::-1]  # tail[k] = sum_{k' >= k} w_k'/N_k'
    weight = tail[np.searchsorted(sizes, np.arange(n), side="right")]
    psi = np.empty(n)
    psi[order] = n * weight * psi_full[order]
    return {"fid_infinity": value, "sizes": sizes, "fids": np.asarray(fids), "psi": psi}
