"""Per-sample influence values of each metric, and normal intervals built from them.

Every metric here is, to first order in the generated samples (the reference held fixed),
``value - E[value] ≈ mean_i psi_i`` with one influence value psi_i per generated sample (for
recall and KID: jackknife pseudo-values, `metrics.jackknife`). The standard error is
``std(psi) / sqrt(n)`` and the interval ``value ± z·SE``; it contains its point estimate by
construction. Two settings whose samples are paired row by row have the difference
``mean_i (psi_b,i - psi_a,i)`` (`metrics.paired`), so sample-to-sample variation common to
both cancels.

- FID: influence function (delta method) of the Fréchet distance w.r.t. the generated
  distribution; one eigendecomposition (d^3) and one quadratic form per sample (n d^2).
- IS: delta method of each split's exp(mean KL) w.r.t. its own samples' softmax rows.
- precision, CLIP score: means of independent per-sample values; psi_i = value_i - mean.
- recall: no per-sample values; `HalfSamples` replicates (`metrics.recall_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metrics.fid import _clip_noise, factor
from metrics.inception_score import split_bounds
from metrics.normal import normal_z


@dataclass
class HalfSamples:
    """Delete-d jackknife replicates: the metric on random halves S of the generated samples;
    Var = factor * var(values), factor = |S| / (n - |S|). Paired settings share the halves."""

    values: np.ndarray
    factor: float

    def se(self) -> float:
        return float(np.sqrt(self.factor * np.var(self.values, ddof=1)))

    def __sub__(self, other: HalfSamples) -> HalfSamples:
        if not isinstance(other, HalfSamples) or len(other.values) != len(self.values) or other.factor != self.factor:
            raise ValueError("half-sample replicates of paired settings must come from the same halves")
        return HalfSamples(self.values - other.values, self.factor)


def standard_error(psi) -> float:
    """std(psi, ddof=1) / sqrt(n) of influence values psi [n] (or a `HalfSamples`' SE)."""
    if isinstance(psi, HalfSamples):
        return psi.se()
    psi = np.asarray(psi, dtype=np.float64)
    if psi.ndim != 1 or psi.size < 2:
        raise ValueError(f"need at least 2 influence values [n], got shape {psi.shape}")
    return float(np.std(psi, ddof=1) / np.sqrt(psi.size))


def interval(value: float, psi, level: float = 0.95) -> dict:
    """{"value", "se", "low", "high"}: value ± z·SE with SE from influence values psi."""
    se = standard_error(psi)
    z = normal_z(level)
    return {"value": float(value), "se": se, "low": float(value - z * se), "high": float(value + z * se)}


def mean_influence(values) -> np.ndarray:
    """Influence values of a mean of independent per-sample values (precision hits, CLIP scores)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return values - values.mean()


def fid_influence(pool, mu_g, sigma_g, mu_r, sigma_r, chunk: int = 4096) -> np.ndarray:
    """psi_i of FID(generated, reference) w.r.t. generated sample i, float64 [n].

    FID = |mu_g - mu_r|^2 + tr S_g + tr S_r - 2 tr sqrt(F^T S_g F) with F F^T = S_r. Perturbing
    the generated distribution towards x moves mu_g by x - mu_g and S_g by (x-mu_g)(x-mu_g)^T - S_g;
    d tr sqrt(M) = tr(M^{-1/2} dM) / 2 gives, with K = F M^{-1/2} F^T (pseudo-inverse on the
    eigenvalues eigh keeps) and c = x - mu_g:
    psi(x) = 2 (mu_g - mu_r)·c + (|c|^2 - tr S_g) - (c^T K c - tr sqrt(M)).
    """
    mu_g, mu_r = np.asarray(mu_g, np.float64), np.asarray(mu_r, np.float64)
    sigma_g, sigma_r = np.asarray(sigma_g, np.float64), np.asarray(sigma_r, np.float64)
    f = factor(sigma_r)
    inner = f.T @ sigma_g @ f
    w, v = np.linalg.eigh((inner + inner.T) / 2)
    w = _clip_noise(w)
    inv_sqrt = np.where(w > 0, 1 / np.sqrt(np.where(w > 0, w, 1)), 0.0)
    fv = f @ v
    k = ((fv * inv_sqrt) @ fv.T).astype(np.float32)  # the n d^2 quadratic forms in float32 (SE needs ~3 digits)
    tr_sqrt = float(np.sqrt(w).sum())
    shift = mu_g - mu_r
    pool = np.asarray(pool)
    psi = np.empty(pool.shape[0])
    for s in range(0, pool.shape[0], chunk):
        c = pool[s : s + chunk].astype(np.float64) - mu_g
        quad = ((c.astype(np.float32) @ k) * c.astype(np.float32)).sum(1, dtype=np.float64)
        psi[s : s + chunk] = 2 * c @ shift + (c * c).sum(1) - quad
    return psi - float(np.trace(sigma_g)) + tr_sqrt


def _split_influence(logits: torch.Tensor) -> tuple[float, np.ndarray]:
    """(score, psi) of one split's exp(mean_i KL(p_i || q)), q = mean_i p_i."""
    p = logits.softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    q = p.mean(dim=0, keepdim=True)
    log_q = q.log()
    kl = (p * (log_p - log_q)).sum(dim=1)
    score = kl.mean().exp().item()
    # d/dp_i of sum_y q_y log q_y through q (sum_y (p_iy - q_y) = 0 drops the +1)
    cross = ((p - q) * log_q).sum(dim=1)
    neg_entropy = (p * log_p).sum(dim=1)
    psi = score * ((neg_entropy - neg_entropy.mean()) - cross)
    return score, psi.numpy()


def inception_score_influence(
    logits,
    splits: int = 10,
    shuffle: bool = True,
    seed: int = 2020,
    convention: str = "torch-fidelity",
    split_size: int = 5000,
) -> np.ndarray:
    """psi_i (in the original sample order) of the Inception Score (mean of split scores).

    IS = mean_j s_j over S splits; s_j - E s_j ≈ mean over split j of its psi, so
    IS - E IS ≈ sum_i psi_i / (S m_j); returned scaled by n so that SE = std(psi)/sqrt(n).
    """
    logits = torch.as_tensor(np.asarray(logits)).double()
    n = logits.shape[0]
    order, bounds = split_bounds(n, splits, shuffle, seed, convention, split_size)
    out = np.empty(n)
    for lo, hi in bounds:
        rows = order[lo:hi]
        _, psi = _split_influence(logits[rows])
        out[rows] = psi * n / (len(bounds) * (hi - lo))
    return out
