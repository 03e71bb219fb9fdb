"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID"): MMD with a Gaussian kernel on CLIP
image embeddings.

    CMMD = scale * ( mean_{i != j} k(x_i, x_j) + mean_{a != b} k(y_a, y_b) - 2 mean_{i, a} k(x_i, y_a) )
    k(x, y) = exp(-|x - y|^2 / (2 sigma^2)),  sigma = 10,  scale = 1000

x: generated embeddings, y: reference embeddings, both L2-normalised first (the paper's code
takes CLIP's normalised image embeddings). This is the unbiased estimator of MMD^2 (Gretton
et al. 2012, eq. 3), as the paper states; the paper's code computes the minimum-variance one,
which keeps the diagonals (`unbiased=False` gives it): the two differ by
scale * ((1 - mean off-diagonal k_xx) / n + (1 - mean off-diagonal k_yy) / m), about 1e-4 at 30,000
images each.

Kernels are evaluated in blocks (float32 products by default, sums in float64; `dtype=float64`
for the exact value), never holding an n x n matrix. The reference's own term depends on the
reference alone and is cached with the reference statistics (`reference_term`).

Interval: with the reference fixed, the U-statistic's first-order (Hoeffding) expansion gives one
influence value per generated sample, psi_i = scale * 2 * ((h_i - mean h) - (g_i - mean g)), h_i the
mean kernel to the other generated samples and g_i the mean kernel to the reference. Where the
two distributions are equal the first-order term vanishes (as KID's) and the interval is
conservative.
"""

from __future__ import annotations

import numpy as np
import torch

SIGMA = 10.0
SCALE = 1000.0
BLOCK = 4096


def normalise(x) -> torch.Tensor:
    """Rows scaled to unit length (float64 arithmetic, returned as float64)."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got {tuple(x.shape)}")
    return x / x.norm(dim=1, keepdim=True)


def kernel_row_sums(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA, dtype=torch.float32, block: int = BLOCK):
    """sum_b k(x_a, y_b) for every row a (float64 [len(x)]), block by block."""
    gamma = 1.0 / (2 * sigma**2)
    xs, ys = x.to(dtype), y.to(dtype)
    x2, y2 = (x * x).sum(1), (y * y).sum(1)
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for r0 in range(0, x.shape[0], block):
        rows = xs[r0 : r0 + block]
        for c0 in range(0, y.shape[0], block):
            dot = (rows @ ys[c0 : c0 + block].T).double()
            d2 = (x2[r0 : r0 + block, None] + y2[None, c0 : c0 + block] - 2 * dot).clamp_min(0)
            out[r0 : r0 + block] += torch.exp(-gamma * d2).sum(1)
    return out


def reference_term(ref, sigma: float = SIGMA, dtype=torch.float32, unbiased: bool = True) -> float:
    """mean_{a != b} k(y_a, y_b) of the normalised reference embeddings (mean over all pairs,
    diagonal included, when not `unbiased`)."""
    y = normalise(ref)
    m = y.shape[0]
    total = float(kernel_row_sums(y, y, sigma, dtype).sum())
    return (total - m) / (m * (m - 1)) if unbiased else total / (m * m)


def cmmd(
    gen,
    ref,
    sigma: float = SIGMA,
    scale: float = SCALE,
    unbiased: bool = True,
    dtype=torch.float32,
    ref_term: float | None = None,
) -> dict:
    """{"cmmd", "psi" [n_gen] influence values} of generated embeddings `gen` [n, D] against
    reference embeddings `ref` [m, D]; `ref_term`: the cached `reference_term` (same sigma and
    estimator)."""
    x, y = normalise(gen), normalise(ref)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding dims differ: generated {x.shape[1]} vs reference {y.shape[1]}")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"CMMD needs at least 2 samples on each side, got {n} and {m}")
    xx = kernel_row_sums(x, x, sigma, dtype)
    xy = kernel_row_sums(x, y, sigma, dtype)
    if ref_term is None:
        ref_term = reference_term(ref, sigma, dtype, unbiased)
    if unbiased:
        h = (xx - 1.0) / (n - 1)  # the diagonal k(x_i, x_i) = 1 left out
    else:
        h = xx / n
    g = xy / m
    value = scale * (float(h.mean()) + ref_term - 2 * float(g.mean()))
    psi = scale * 2 * ((h - h.mean()) - (g - g.mean()))
    return {"cmmd": value, "psi": psi.numpy()}
