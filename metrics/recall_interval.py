"""Interval for recall (Kynkäänniemi et al.): half-sampling over the generated samples, exact.

Recall = share of the (fixed) real samples inside at least one generated sample's k-NN ball.
What varies from run to run is the generated set, and each real sample's decision depends on
all of it (the balls' radii are distances between generated samples), so recall is not a mean
of independent values; and it is not smooth: the delete-one jackknife overstates its variance
(~1.7x in SE in our simulations) and the bootstrap's duplicates shrink k-NN radii to zero.

The delete-d jackknife with d = n/2 is consistent for such statistics (Shao & Wu 1989): recall
is recomputed on B random halves S of the generated samples (seeded, so two paired settings
share them) and Var = (|S| / (n - |S|)) var_s(recall_S). Each half's recall is exact and needs
no new distances: one gen x gen pass keeps every sample's `depth` nearest neighbours (a half's
k-NN radius is the k-th nearest of them that lies in the half; with depth 32 and k = 3 fewer
than k fall in a half with probability ~1e-7, then the depth-th distance is used), and the
real x gen pass keeps every pair within a generated sample's depth-th distance. The full
sample's decisions are the same float32 `cdist` blocks as `metrics.prc`, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from metrics.influence import HalfSamples
from metrics.prc import DEFAULT_BATCH, DEFAULT_K, _as_float32

DEPTH = 32
HALVES = 100
SEED = 0


def knn_lists(features, k: int = DEFAULT_K, depth: int = DEPTH, batch_size: int = DEFAULT_BATCH):
    """(radii [n] == knn_radii, distances [n, depth+1] and indices [n, depth+1] of the nearest
    samples, sorted, the sample itself included)."""
    x = _as_float32(features)
    n = x.shape[0]
    width = min(depth + 1, n)
    if n < k + 2:
        raise ValueError(f"the recall interval with k={k} needs at least {k + 2} generated samples, got {n}")
    dists, idxs = [], []
    for r0 in range(0, n, batch_size):
        rows = x[r0 : r0 + batch_size]
        best_v = best_i = None
        for c0 in range(0, n, batch_size):
            d = torch.cdist(rows, x[c0 : c0 + batch_size])
            v, i = d.topk(min(width, d.shape[1]), dim=1, largest=False)
            if best_v is not None:
                v, i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i + c0], dim=1)
            else:
                i = i + c0
            v, order = v.topk(min(width, v.shape[1]), dim=1, largest=False, sorted=True)
            best_v, best_i = v, i.gather(1, order)
        dists.append(best_v)
        idxs.append(best_i)
    dist, idx = torch.cat(dists), torch.cat(idxs)
    return dist[:, k].clone(), dist.numpy(), idx.numpy()


def prc_pairs(gen, real, gen_radii, gen_reach, real_radii, batch_size: int = DEFAULT_BATCH):
    """One real x gen pass: (gen_hit, real_hit) as `precision_recall_hits`, and every pair
    (real j, gen gi, distance) with distance <= gen_reach[gi]."""
    gen, real = _as_float32(gen), _as_float32(real)
    gen_radii, gen_reach = torch.as_tensor(gen_radii).float(), torch.as_tensor(gen_reach).float()
    real_radii = torch.as_tensor(real_radii).float()
    gen_hit = torch.zeros(gen.shape[0], dtype=torch.bool)
    real_hit = torch.zeros(real.shape[0], dtype=torch.bool)
    js, ls, ds = [], [], []
    for r0 in range(0, real.shape[0], batch_size):
        rows = real[r0 : r0 + batch_size]
        rr = real_radii[r0 : r0 + batch_size, None]
        for g0 in range(0, gen.shape[0], batch_size):
            d = torch.cdist(rows, gen[g0 : g0 + batch_size])
            real_hit[r0 : r0 + batch_size] |= (d <= gen_radii[None, g0 : g0 + batch_size]).any(dim=1)
            gen_hit[g0 : g0 + batch_size] |= (d <= rr).any(dim=0)
            j, gi = (d <= gen_reach[None, g0 : g0 + batch_size]).nonzero(as_tuple=True)
            js.append(j + r0)
            ls.append(gi + g0)
            ds.append(d[j, gi])
    return (gen_hit.numpy(), real_hit.numpy(), torch.cat(js).numpy(), torch.cat(ls).numpy(), torch.cat(ds).numpy())


def half_radii(dist: np.ndarray, idx: np.ndarray, member: np.ndarray, k: int) -> np.ndarray:
    """k-NN radius of every sample within the half `member` (bool [n]), from its nearest list."""
    own = idx == np.arange(len(idx))[:, None]
    inside = member[idx] & ~own
    rank = np.cumsum(inside, axis=1)
    hit = inside & (rank == k)
    found = hit.any(axis=1)
    return np.where(found, dist[np.arange(len(dist)), hit.argmax(axis=1)], dist[:, -1])


def half_recalls(
    n_real: int, dist, idx, j, gi, d, k: int = DEFAULT_K, halves: int = HALVES, seed: int = SEED
) -> tuple[np.ndarray, int]:
    """(recall on each of `halves` seeded random halves of the generated samples, half size)."""
    n = len(dist)
    size = n // 2
    rng = np.random.default_rng(seed)
    out = np.empty(halves)
    for b in range(halves):
        member = np.zeros(n, dtype=bool)
        member[rng.choice(n, size, replace=False)] = True
        radii = half_radii(dist, idx, member, k)
        ok = member[gi] & (d <= radii[gi])
        out[b] = np.count_nonzero(np.bincount(j[ok], minlength=n_real)) / n_real
    return out, size


def recall_interval(
    gen, real, real_radii, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH, halves: int = HALVES, seed: int = SEED
):
    """(gen_hit, real_hit, HalfSamples of recall): the decisions of `precision_recall_hits`
    and the half-sample replicates."""
    radii, dist, idx = knn_lists(gen, k, DEPTH, batch_size)
    gen_hit, real_hit, j, gi, d = prc_pairs(gen, real, radii, dist[:, -1], real_radii, batch_size)
    reps, size = half_recalls(len(real_hit), dist, idx, j, gi, d, k, halves, seed)
    return gen_hit, real_hit, HalfSamples(reps, size / (len(gen_hit) - size))
