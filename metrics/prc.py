"""Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifolds of pool features.

Definition and argument order as torch-fidelity 0.4.0 (`metric_prc.py`): the first set is
GENERATED, the second REAL.

- precision: share of generated samples inside at least one real sample's ball, whose
  radius is that real sample's distance to its k-th nearest real neighbour;
- recall: share of real samples inside at least one generated sample's ball.

Distances are the same float32 ``torch.cdist`` calls on the same blocks as torch-fidelity's
default ("full") mode: rows and columns split into blocks of ``batch_size`` (10,000).
Every distance is therefore bit-identical and so is every 0/1 decision. Unlike it, the
N x N matrices are never held: each block is reduced at once (running k smallest for the
radii; both precision and recall hits from one cross-distance pass), so memory stays at
about one block (400 MB), and the reference radii can be cached with the reference.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 3
DEFAULT_BATCH = 10000


def _as_float32(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features, dtype=np.float32)) if not torch.is_tensor(features) else features
    x = x.float().contiguous()
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got {tuple(x.shape)}")
    return x


def knn_radii(features, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Distance of each sample to its k-th nearest neighbour in the same set (itself excluded,
    i.e. the (k+1)-th smallest distance of its row, as torch-fidelity's ``kthvalue(k+1)``)."""
    x = _as_float32(features)
    if x.shape[0] < k + 1:
        raise ValueError(f"precision/recall with k={k} needs at least {k + 1} samples, got {x.shape[0]}")
    radii = []
    for rows in x.split(batch_size):
        best = None
        for cols in x.split(batch_size):
            d = torch.cdist(rows, cols)
            part = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
            del d
            cand = part if best is None else torch.cat([best, part], dim=1)
            best = cand.topk(min(k + 1, cand.shape[1]), dim=1, largest=False, sorted=True).values
        radii.append(best[:, k].clone())
    return torch.cat(radii)


def precision_recall_hits(
    gen, real, gen_radii=None, real_radii=None, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample decisions: (generated sample inside the real manifold [N_gen] bool,
    real sample inside the generated manifold [N_real] bool)."""
    gen, real = _as_float32(gen), _as_float32(real)
    if gen.shape[1] != real.shape[1]:
        raise ValueError(f"feature dims differ: generated {gen.shape[1]} vs real {real.shape[1]}")
    gen_radii = knn_radii(gen, k, batch_size) if gen_radii is None else torch.as_tensor(gen_radii).float()
    real_radii = knn_radii(real, k, batch_size) if real_radii is None else torch.as_tensor(real_radii).float()
    if gen_radii.shape[0] != gen.shape[0] or real_radii.shape[0] != real.shape[0]:
        raise ValueError("k-NN radii do not match the number of samples")
    gen_hit = torch.zeros(gen.shape[0], dtype=torch.bool)
    real_hit = torch.zeros(real.shape[0], dtype=torch.bool)
    for r0 in range(0, real.shape[0], batch_size):
        rows = real[r0 : r0 + batch_size]
        rr = real_radii[r0 : r0 + batch_size, None]
        for g0 in range(0, gen.shape[0], batch_size):
            d = torch.cdist(rows, gen[g0 : g0 + batch_size])  # the block torch-fidelity computes
            real_hit[r0 : r0 + batch_size] |= (d <= gen_radii[None, g0 : g0 + batch_size]).any(dim=1)
            gen_hit[g0 : g0 + batch_size] |= (d <= rr).any(dim=0)
            del d
    return gen_hit.numpy(), real_hit.numpy()


def precision_recall(
    gen, real, gen_radii=None, real_radii=None, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> tuple[float, float]:
    gen_hit, real_hit = precision_recall_hits(gen, real, gen_radii, real_radii, k, batch_size)
    return float(gen_hit.mean()), float(real_hit.mean())
