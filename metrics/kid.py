"""Kernel Inception Distance (Bińkowski et al. 2018) as torch-fidelity 0.4.0 computes it.

Unbiased MMD^2 with the polynomial kernel k(x, y) = (gamma x·y + coef0)^degree (degree 3,
gamma 1/d, coef0 1), averaged over `subsets` random subsets of `subset_size` generated and
`subset_size` real samples drawn by ``np.random.RandomState(seed)`` (generated first, then
real, per subset, without replacement), in float32 numpy, the same operations in the same
order as torch-fidelity's ``kid_features_to_metric``, so the value equals it.

Interval: leave-one-out jackknife over the generated samples with the subset indices held
fixed: removing generated sample i turns every subset that holds it into an unbiased MMD^2 of
m - 1 generated vs m real samples, from that subset's kernel row sums (no extra kernels).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000
DEFAULT_SEED = 2020


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1
) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (np.matmul(x, y.T) * gamma + coef0) ** degree


def _unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray):
    """(MMD^2 as torch-fidelity's `mmd2(..., "unbiased")`, and the row sums the jackknife needs)."""
    m = k_xx.shape[0]
    xx_rows = k_xx.sum(axis=1) - np.diagonal(k_xx)
    yy_rows = k_yy.sum(axis=1) - np.diagonal(k_yy)
    xy_cols = k_xy.sum(axis=0)
    value = (xx_rows.sum() + yy_rows.sum()) / (m * (m - 1)) - 2 * xy_cols.sum() / (m * m)
    return value, xx_rows, yy_rows, k_xy.sum(axis=1)


def _without_one(xx_rows, yy_sum: float, xy_rows) -> np.ndarray:
    """Unbiased MMD^2 of the subset without generated row p, for every p (float64)."""
    m = len(xx_rows)
    xx = xx_rows.astype(np.float64)
    xy = xy_rows.astype(np.float64)
    xx_sum, xy_sum = xx.sum(), xy.sum()
    return (xx_sum - 2 * xx) / ((m - 1) * (m - 2)) + yy_sum / (m * (m - 1)) - 2 * (xy_sum - xy) / ((m - 1) * m)


def kid(
    gen,
    real,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1,
    seed: int = DEFAULT_SEED,
) -> dict:
    """{"kid", "kid_std" (torch-fidelity's spread over subsets), "psi" [n_gen] jackknife
    pseudo-values over the generated samples}."""
    x, y = np.asarray(gen, dtype=np.float32), np.asarray(real, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs [N, D] features of one D, got {x.shape} and {y.shape}")
    n1, n2 = len(x), len(y)
    if min(n1, n2) < subset_size or subset_size < 3:
        raise ValueError(
            f"KID subset size {subset_size} needs at least that many samples on each side "
            f"(generated {n1}, real {n2}) and at least 3"
        )
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    shift = np.zeros(n1)  # sum over subsets of (value without i - value)
    for s in range(subsets):
        i1 = rng.choice(n1, subset_size, replace=False)
        i2 = rng.choice(n2, subset_size, replace=False)
        f1, f2 = x[i1], y[i2]
        k_xx = polynomial_kernel(f1, f1, degree, gamma, coef0)
        k_yy = polynomial_kernel(f2, f2, degree, gamma, coef0)
        k_xy = polynomial_kernel(f1, f2, degree, gamma, coef0)
        values[s], xx_rows, yy_rows, xy_rows = _unbiased_mmd2(k_xx, k_xy, k_yy)
        np.add.at(shift, i1, _without_one(xx_rows, float(yy_rows.astype(np.float64).sum()), xy_rows) - float(values[s]))
    value = float(np.mean(values))
    loo = value + shift / subsets
    psi = (n1 - 1) * (loo.mean() - loo)
    return {"kid": value, "kid_std": float(np.std(values)), "psi": psi}
