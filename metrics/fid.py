"""Fréchet distance between two Gaussians fitted to features (FID).

Statistics are float64. The trace of the matrix square root of S1·S2 is taken through
a symmetric form F^T·S2·F with F·F^T = S1 (F = Cholesky factor, or sqrt(S1) by `eigh` when
S1 is singular): its eigenvalues are those of S1·S2, real and stable, instead of scipy's
general `sqrtm`. Eigenvalues below the rounding floor of `eigh`
(D * eps * largest eigenvalue; negative ones included) are set to zero, so that
rank-deficient covariances (N <= D) add no square roots of rounding noise.
"""

from __future__ import annotations

import numpy as np


class StatisticsError(ValueError):
    pass


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of features [N, D]; refuses N < 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise StatisticsError(f"features must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise StatisticsError(f"FID needs at least 2 samples, got {x.shape[0]}")
    mu = x.mean(axis=0)
    centered = x - mu
    sigma = centered.T @ centered / (x.shape[0] - 1)
    return mu, sigma


def _clip_noise(w: np.ndarray) -> np.ndarray:
    floor = w.size * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 0.0)
    return np.where(w > floor, w, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(_clip_noise(w))) @ v.T


def factor(sigma: np.ndarray) -> np.ndarray:
    """F with F F^T = sigma: Cholesky when positive definite, else the PSD square root."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return _psd_sqrt(sigma)


def trace_sqrt_product(factor1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(S1 S2)) given F1 F1^T = S1, from the eigenvalues of F1^T S2 F1."""
    inner = factor1.T @ sigma2 @ factor1
    return float(np.sqrt(_clip_noise(np.linalg.eigvalsh((inner + inner.T) / 2))).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise StatisticsError(
            f"statistics do not match: mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape}"
        )
    tr_covmean = trace_sqrt_product(factor(sigma1), sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
