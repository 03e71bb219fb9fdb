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
- coverage depends on the whole generated set (is any generated sample in ball i?): delete-d
  jackknife over random halves of the generated samples (as recall's, `metrics.recall_interval`),
  each half's coverage exact from the (real, generated) pairs inside the balls kept in the pass.
"""

from __future__ import annotations

import numpy as np
import torch

from metrics.influence import HalfSamples

DEFAULT_K = 5
BLOCK = 4096
HALVES = 100


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


def half_coverages(n_real: int, n_gen: int, reals, gens, halves: int = HALVES, seed: int = 0):
    """(coverage on each of `halves` seeded random halves of the generated samples, half size)."""
    size = n_gen // 2
    rng = np.random.default_rng(seed)
    out = np.empty(halves)
    for b in range(halves):
        member = np.zeros(n_gen, dtype=bool)
        member[rng.choice(n_gen, size, replace=False)] = True
        out[b] = np.count_nonzero(np.bincount(reals[member[gens]], minlength=n_real)) / n_real
    return out, size


def density_coverage(
    gen, real, radii=None, k: int = DEFAULT_K, block: int = BLOCK, halves: int = HALVES, seed: int = 0
) -> dict:
    """{"density", "coverage", "density_psi" [m], "coverage_halves" (`HalfSamples`)}; `radii`:
    the cached `real_radii(real, k)`."""
    if radii is None:
        radii = real_radii(real, k, block)
    counts, reals, gens = density_coverage_pairs(gen, real, radii, block)
    n_real, n_gen = len(radii), len(counts)
    density = float(counts.sum()) / (k * n_gen)
    coverage = np.count_nonzero(np.bincount(reals, minlength=n_real)) / n_real
    out = {"density": density, "coverage": float(coverage), "density_psi": counts / k - density}
    if n_gen >= 4:
        values, size = half_coverages(n_real, n_gen, reals, gens, halves, seed)
        out["coverage_halves"] = HalfSamples(values, size / (n_gen - size))
    return out
