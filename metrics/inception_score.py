"""Inception Score over `logits_unbiased`, in float64.

Default convention = torch-fidelity's (`isc_features_to_metric`): rows permuted with
``np.random.RandomState(2020).permutation(N)``, then `splits` contiguous chunks
``[i*N//splits, (i+1)*N//splits)``. ``convention="guided-diffusion"`` follows OpenAI's
ADM evaluator instead: no shuffle, consecutive chunks of ``split_size`` (5,000) samples.
"""

from __future__ import annotations

import numpy as np
import torch


def _split_score(logits: torch.Tensor) -> float:
    p = logits.softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    q = p.mean(dim=0, keepdim=True)
    return (p * (log_p - q.log())).sum(dim=1).mean().exp().item()


def split_bounds(
    n: int,
    splits: int = 10,
    shuffle: bool = True,
    seed: int = 2020,
    convention: str = "torch-fidelity",
    split_size: int = 5000,
) -> tuple[np.ndarray, list]:
    """(row order, [(lo, hi)] per split): split j holds rows order[lo:hi] of the original logits."""
    if convention == "torch-fidelity":
        order = np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)
        bounds = [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]
    elif convention == "guided-diffusion":
        order = np.arange(n)
        bounds = [(i, min(i + split_size, n)) for i in range(0, n, split_size)]
    else:
        raise ValueError(f"unknown Inception Score convention {convention!r}")
    if any(hi <= lo for lo, hi in bounds):
        raise ValueError(f"Inception Score needs at least {splits} samples for {splits} splits, got {n}")
    return order, bounds


def inception_score(
    logits,
    splits: int = 10,
    shuffle: bool = True,
    seed: int = 2020,
    convention: str = "torch-fidelity",
    split_size: int = 5000,
) -> tuple[float, float]:
    """(mean, std) of exp(E KL(p(y|x) || p(y))) over splits."""
    logits = torch.as_tensor(np.asarray(logits)).double()
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must be [N, K] with N >= 1, got {tuple(logits.shape)}")
    n = logits.shape[0]
    order, bounds = split_bounds(n, splits, shuffle, seed, convention, split_size)
    if convention == "torch-fidelity" and shuffle:
        logits = logits[order]
    scores = [_split_score(logits[lo:hi]) for lo, hi in bounds]
    return float(np.mean(scores)), float(np.std(scores))
