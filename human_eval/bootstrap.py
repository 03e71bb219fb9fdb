"""Multinomial bootstrap over judgments, fitted for all replicates at once.

Resampling N judgments with replacement is the same as drawing the aggregated counts of
every (pair, outcome) cell from one multinomial with the observed cell frequencies, so a
replicate costs one multinomial draw of a few hundred cells, not N row draws. All replicates
are then fitted together by batched Newton (`fit.newton_batch`), warm-started at the point
estimate.
"""

from __future__ import annotations

import numpy as np

from human_eval.fit import PairCounts, half_wins, newton_batch


def resample_counts(pc: PairCounts, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """(rounds, P, 3) count tables, each a multinomial resample of ``pc.n_judgments``."""
    flat = pc.counts.ravel()
    total = int(flat.sum())
    draws = rng.multinomial(total, flat / total, size=rounds)
    return draws.reshape(rounds, *pc.counts.shape).astype(np.float64)


def identifiable_batch(counts: np.ndarray, i: np.ndarray, j: np.ndarray, n_models: int) -> np.ndarray:
    """(R,) bool: the unpenalised fit of each count table is finite, i.e. the directed graph
    "k won or tied against l at least once" is strongly connected (by boolean closure)."""
    r_count, m = counts.shape[0], n_models
    a_ij, a_ji = half_wins(counts)
    reach = np.broadcast_to(np.eye(m), (r_count, m, m)).copy()
    reach[:, i, j] += a_ij > 0
    reach[:, j, i] += a_ji > 0
    reach = reach > 0
    for _ in range(int(np.ceil(np.log2(max(m, 2))))):
        reach = (reach.astype(np.float32) @ reach.astype(np.float32)) > 0
    return reach.all(axis=(1, 2))


def bootstrap_ratings(
    pc: PairCounts, theta_hat: np.ndarray, rounds: int, rng: np.random.Generator, l2: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit ``rounds`` multinomial resamples.

    Returns (theta, counts, ok): natural-log strengths (R, M) summing to zero, the resampled
    count tables (R, P, 3) and a mask of replicates with a finite fit (always all True when
    ``l2 > 0``); rows of ``theta`` where ``ok`` is False are NaN.
    """
    counts = resample_counts(pc, rounds, rng)
    ok = np.ones(rounds, bool) if l2 > 0 else identifiable_batch(counts, pc.i, pc.j, pc.n_models)
    theta = np.full((rounds, pc.n_models), np.nan)
    if ok.any():
        start = np.broadcast_to(theta_hat, (int(ok.sum()), pc.n_models))
        theta[ok] = newton_batch(counts[ok], pc.i, pc.j, pc.n_models, l2, start)
    return theta, counts, ok
