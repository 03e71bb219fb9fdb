"""Density and coverage (Naeem et al., ICML 2020), as the `prdc` package computes them.

With r_i the distance of real sample i to its k-th nearest real neighbour (itself excluded):

- density  = 1/(k m) * sum_j #{i : d(real_i, gen_j) < r_i}   (m generated samples);
- coverage = 1/N * #{i : min_j d(real_i, gen_j) < r_i}         (N real samples).

Distances as `prdc` (through scikit-learn's `pairwise_distances` on float32 features): squared
distances |x|^2 + |y|^2 - 2 x.y in float64, rounded to float32, clipped at 0, square root in
float32; the comparison is strict. So every decision, and each value, equals prdc's. Nothing
larger than a block of `block` x `block` distances is held.

Intervals (the reference fixed, generated samples varying):
- density is a mean of independent per-generated-sample counts: psi_j = c_j / k - density;
- coverage = (1/N) sum_i Z_i, Z_i = 1[some generated sample falls in ball i], depends on the
  whole generated set. With R_i the generated rows inside ball i (rows i.i.d., each ball rarely
  hit: the Poisson limit), Cov(Z_i, Z_j) = exp(-|R_i u R_j| rates) - exp(-(rate_i + rate_j)), and
  an unbiased estimate of it is g(|R_i|) when R_i = R_j, else 0, with g(0) = 0, g(odd) = 1,
  g(even) = -1 (E[1[c = 0]] = e^-L and E[(-1)^c] = e^-2L for a Poisson count c). So
  Var(coverage) ~ (1/N^2) sum over groups of balls holding the same generated rows of
  g(rows) * (balls in group)^2 (`BallHits`). The same estimate, balls of setting A weighted -1
  and of B +1 (rows paired by index), gives the paired difference's variance. (Half-sampling, as
  recall's interval, misjudges it: a ball's variance is not ~1/n; it covered 87.5% and 99.5% in
  two simulated worlds.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_K = 5
BLOCK = 4096


@dataclass
class BallHits:
    """The generated rows inside each reference ball, weighted: the variance of sum_u w_u Z_u
    (Z_u = 1[any of the ball's rows]) by the unbiased Poisson-limit estimate (module docstring).
    Settings paired row by row subtract (`b - a`)."""

    keys: list  # one hashable row set per ball (a sorted tuple of generated row indices)
    signs: list  # +1 / -1 per ball (integers: a paired difference cancels exactly)
    scale: float  # each ball's weight is sign * scale (1 / N)

    def variance(self) -> float:
        groups: dict = {}
        for key, sign in zip(self.keys, self.signs):
            if key:  # a ball nobody hits: no variance estimate (g(0) = 0)
                groups[key] = groups.get(key, 0) + sign
        total = sum((1 if len(key) % 2 else -1) * w * w for key, w in groups.items())
        return max(total, 0) * self.scale**2

    def se(self) -> float:
        return float(np.sqrt(self.variance()))

    def __sub__(self, other: BallHits) -> BallHits:
        if other.scale != self.scale:
            raise ValueError("paired coverage differences need the same reference (number of balls)")
        return BallHits(self.keys + other.keys, self.signs + [-s for s in other.signs], self.scale)


def ball_hits(n_real: int, reals: np.ndarray, gens: np.ndarray) -> BallHits:
    """`BallHits` of coverage from the (real ball, generated row) pairs, weight 1/N each."""
    order = np.lexsort((gens, reals))
    reals, gens = reals[order], gens[order]
    bounds = np.searchsorted(reals, np.arange(n_real + 1))
    keys = [tuple(gens[bounds[i] : bounds[i + 1]].tolist()) for i in range(n_real)]
    return BallHits(keys, [1] * n_real, 1.0 / n_real)


def _float32(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got {tuple(x.shape)}")
    return x


def distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float32 [len(x), len(y)] Euclidean distances, rounded as scikit-learn's for float32 input."""
    x64, y64 = x.double(), y.double()
    d2 = (x64 * x64).sum(1)[:, None] - 2 * (x64 @ y64.T) + (y64 * y64).sum(1)[None, :]
    return d2.float().clamp_min(0).sqrt()


def real_radii(real, k: int = DEFAULT_K, block: int = BLOCK) -> np.ndarray:
    """Distance of each real sample to its k-th nearest real neighbour (prdc's k+1-th smallest of
    its row, its own zero distance included), float32 [N]."""
    x = _float32(real)
    n = x.shape[0]
    if n < k + 1:
        raise ValueError(f"density/coverage with k={k} need at least {k + 1} real samples, got {n}")
    out = torch.empty(n, dtype=torch.float32)
    for r0 in range(0, n, block):
        rows = x[r0 : r0 + block]
        best = None
        for c0 in range(0, n, block):
            d = distances(rows, x[c0 : c0 + block])
            idx = torch.arange(rows.shape[0])
            inside = idx + r0 - c0
            ok = (inside >= 0) & (inside < d.shape[1])
            d[idx[ok], inside[ok]] = 0.0  # scikit-learn zeroes the diagonal of X against X
            part = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
            cand = part if best is None else torch.cat([best, part], dim=1)
            best = cand.topk(min(k + 1, cand.shape[1]), dim=1, largest=False, sorted=True).values
        out[r0 : r0 + block] = best[:, k]
    return out.numpy()


def density_coverage_pairs(gen, real, radii, block: int = BLOCK):
    """(count per generated sample [m] of real balls holding it, real index and generated index
    of every such pair) from one real x generated pass."""
    g, r = _float32(gen), _float32(real)
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"feature dims differ: generated {g.shape[1]} vs real {r.shape[1]}")
    rr = torch.as_tensor(np.asarray(radii, dtype=np.float32))
    if rr.shape[0] != r.shape[0]:
        raise ValueError(f"{rr.shape[0]} k-NN radii for {r.shape[0]} real samples")
    counts = torch.zeros(g.shape[0], dtype=torch.int64)
    reals, gens = [], []
    for r0 in range(0, r.shape[0], block):
        rows = r[r0 : r0 + block]
        for g0 in range(0, g.shape[0], block):
            inside = distances(rows, g[g0 : g0 + block]) < rr[r0 : r0 + block, None]
            counts[g0 : g0 + block] += inside.sum(0)
            i, j = inside.nonzero(as_tuple=True)
            reals.append(i + r0)
            gens.append(j + g0)
    return counts.numpy(), torch.cat(reals).numpy(), torch.cat(gens).numpy()


def density_coverage(gen, real, radii=None, k: int = DEFAULT_K, block: int = BLOCK) -> dict:
    """{"density", "coverage", "density_psi" [m], "coverage_hits" (`BallHits`)}; `radii`: the
    cached `real_radii(real, k)`."""
    if radii is None:
        radii = real_radii(real, k, block)
    counts, reals, gens = density_coverage_pairs(gen, real, radii, block)
    n_real, n_gen = len(radii), len(counts)
    density = float(counts.sum()) / (k * n_gen)
    coverage = np.count_nonzero(np.bincount(reals, minlength=n_real)) / n_real
    return {
        "density": density,
        "coverage": float(coverage),
        "density_psi": counts / k - density,
        "coverage_hits": ball_hits(n_real, reals, gens),
    }
