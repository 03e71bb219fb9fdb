"""Elo ratings from pairwise counts: the GLIDE estimator (Appendix A.1) and its diagnostics.

With A_ij the wins of model i over model j (a tie counts half a win to both), the ratings
minimise

    L(s) = -sum_ij A_ij log(1 / (1 + 10^((s_j - s_i) / 400)))  [+ l2/2 * sum_i theta_i^2]

which is Bradley-Terry maximum likelihood on the Elo scale. ``theta = s ln(10) / 400`` is the
natural-log strength; the optional L2 term is a Gaussian prior on it with standard deviation
1/sqrt(l2) (one unit of theta is 400/ln(10) = 173.7 Elo). The fit starts from s = 0 and the
ratings sum to zero.

Without the penalty the minimum is finite only when every split of the models into two
groups has judgments won (or tied) in both directions; `check_identifiable` names the models
when it is not (a disconnected comparison graph, or models that never lose / never win).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from human_eval.judgments import cut

ELO_PER_NAT = 400.0 / np.log(10.0)
OUTCOMES = ("wins_i", "wins_j", "ties")


class FitError(ValueError):
    """The ratings are not identifiable from these judgments (the message says why)."""


@dataclass
class PairCounts:
    """Judgments aggregated per unordered pair: ``counts[p] = (wins of i, wins of j, ties)``
    for models ``models[i[p]]`` and ``models[j[p]]`` with ``i[p] < j[p]``."""

    models: list[str]
    i: np.ndarray
    j: np.ndarray
    counts: np.ndarray

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_judgments(self) -> int:
        return int(self.counts.sum())


def pair_counts(model_a, model_b, winner) -> PairCounts:
    """Aggregate judgments (sequences of names and ``a``/``b``/``tie``) into `PairCounts`.
    Models are sorted by name; the side a model was shown on does not matter."""
    model_a, model_b, winner = (np.asarray(x, dtype=object) for x in (model_a, model_b, winner))
    unknown = set(winner) - {"a", "b", "tie"}
    if unknown:
        raise FitError(f"winner must be 'a', 'b' or 'tie', got {sorted(map(str, unknown))[:5]}")
    if (model_a == model_b).any():
        raise FitError(f"a model compared with itself: {model_a[model_a == model_b][0]!r}")
    models = sorted(set(model_a) | set(model_b))
    index = {m: k for k, m in enumerate(models)}
    ia = np.fromiter((index[m] for m in model_a), np.int64, len(model_a))
    ib = np.fromiter((index[m] for m in model_b), np.int64, len(model_b))
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    won_a, won_b = winner == "a", winner == "b"
    outcome = np.where(winner == "tie", 2, np.where((won_a & (ia == lo)) | (won_b & (ib == lo)), 0, 1))
    m = len(models)
    cells = np.bincount((lo * m + hi) * 3 + outcome, minlength=m * m * 3).reshape(m * m, 3)
    keys = np.flatnonzero(cells.sum(1))
    return PairCounts(models, keys // m, keys % m, cells[keys].astype(np.float64))


def half_wins(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A_ij, A_ji) per pair: wins plus half the ties (works on any leading batch shape)."""
    return counts[..., 0] + 0.5 * counts[..., 2], counts[..., 1] + 0.5 * counts[..., 2]


def check_identifiable(pc: PairCounts) -> list[str]:
    """Why the unpenalised fit has no finite minimum: one message per problem, [] if none."""
    m = pc.n_models
    if m < 2:
        return [f"need at least two models, got {m}"]
    a_ij, a_ji = half_wins(pc.counts)
    ones = np.ones(len(pc.i))
    n_comp, comp = connected_components(coo_matrix((ones, (pc.i, pc.j)), shape=(m, m)), directed=False)
    if n_comp > 1:
        groups = [_names(pc.models, comp == c) for c in range(n_comp)]
        return [
            f"the comparison graph is disconnected: {n_comp} groups of models were never compared "
            f"with each other: " + "; ".join(f"{{{g}}}" for g in groups)
        ]
    # edge k -> l when k beat (or tied) l at least once
    src = np.concatenate([pc.i[a_ij > 0], pc.j[a_ji > 0]])
    dst = np.concatenate([pc.j[a_ij > 0], pc.i[a_ji > 0]])
    n_scc, scc = connected_components(
        coo_matrix((np.ones(len(src)), (src, dst)), shape=(m, m)), directed=True, connection="strong"
    )
    if n_scc == 1:
        return []
    beats = np.zeros((n_scc, n_scc), bool)
    beats[scc[src], scc[dst]] = True
    np.fill_diagonal(beats, False)
    # a group nobody outside it beat "never lost"; a group that beat nobody outside "never won";
    # with a complementary pair (the same split) only the statement about the smaller group is kept
    found = {}
    for kind, comps in (("never lost", np.flatnonzero(~beats.any(0))), ("never won", np.flatnonzero(~beats.any(1)))):
        for c in comps:
            members = frozenset(np.flatnonzero(scc == c).tolist())
            split = min(members, frozenset(range(m)) - members, key=lambda s: (len(s), sorted(s)))
            if split not in found or len(members) < len(found[split][1]):
                found[split] = (kind, members)
    return [
        f"the data is separable: {{{_names(pc.models, [k in members for k in range(m)])}}} {kind} "
        f"(or tied) against {{{_names(pc.models, [k not in members for k in range(m)])}}}"
        for kind, members in found.values()
    ]


def comparison_groups(pc: PairCounts) -> np.ndarray:
    """Group number per model (0, 1, ...; in order of each group's first model): models are in one
    group when a chain of compared pairs joins them. Ratings are comparable only within a group."""
    m = pc.n_models
    _, comp = connected_components(coo_matrix((np.ones(len(pc.i)), (pc.i, pc.j)), shape=(m, m)), directed=False)
    first_seen = {c: k for k, c in reversed(list(enumerate(comp)))}
    order = {c: rank for rank, c in enumerate(sorted(first_seen, key=first_seen.get))}
    return np.array([order[c] for c in comp], dtype=np.int64)


def _names(models, mask) -> str:
    return ", ".join(cut(m) for m, keep in zip(models, mask) if keep)


def neg_log_likelihood(theta: np.ndarray, pc: PairCounts, l2: float = 0.0) -> tuple[float, np.ndarray]:
    """The loss L (natural-log strengths ``theta``) and its gradient."""
    a_ij, a_ji = half_wins(pc.counts)
    d = theta[pc.i] - theta[pc.j]
    loss = a_ij @ np.logaddexp(0.0, -d) + a_ji @ np.logaddexp(0.0, d) + 0.5 * l2 * theta @ theta
    r = a_ij - (a_ij + a_ji) * _sigmoid(d)  # observed minus expected wins of i over j
    grad = np.bincount(pc.j, r, pc.n_models) - np.bincount(pc.i, r, pc.n_models) + l2 * theta
    return float(loss), grad


def fit_elo(pc: PairCounts, l2: float = 0.0) -> np.ndarray:
    """Elo ratings (summing to zero) of ``pc.models``: L-BFGS from s = 0 on the loss above,
    finished with Newton steps to machine precision.

    Raises FitError when ``l2 == 0`` and the data do not identify the ratings.
    """
    if not np.isfinite(l2) or l2 < 0:
        raise FitError(f"l2 must be a finite number >= 0, got {l2}")
    if l2 == 0:
        problems = check_identifiable(pc)
        if problems:
            raise FitError(
                "; ".join(problems) + ". The maximum-likelihood ratings are infinite or "
                "undefined; add judgments or pass an L2 penalty (e.g. --l2 0.01)"
            )
    scale = 1.0 / max(pc.n_judgments, 1)

    def fun(theta):
        loss, grad = neg_log_likelihood(theta, pc, l2)
        return loss * scale, grad * scale

    res = minimize(
        fun,
        np.zeros(pc.n_models),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-10},
    )
    theta = newton_batch(pc.counts[None], pc.i, pc.j, pc.n_models, l2, res.x[None])[0]
    return (theta - theta.mean()) * ELO_PER_NAT


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def newton_batch(
    counts: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    n_models: int,
    l2: float = 0.0,
    start: np.ndarray | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> np.ndarray:
    """Minimise the loss for R count tables at once (``counts`` is (R, P, 3)); returns the
    natural-log strengths (R, n_models), each summing to zero.

    Damped Newton: every replicate takes the full step when it lowers its loss, else halves
    it. Stops when every step is below ``tol`` (in theta units). The tables must be
    identifiable (or ``l2 > 0``).
    """
    r_count, m = counts.shape[0], n_models
    a_ij, a_ji = half_wins(counts)
    n = a_ij + a_ji
    rows = np.arange(len(i))
    incidence = np.zeros((len(i), m))
    incidence[rows, i], incidence[rows, j] = 1.0, -1.0
    # hessian of pair p is w_p (e_i - e_j)(e_i - e_j)^T: scatter it as one (P, m*m) product
    laplacian = np.zeros((len(i), m * m))
    laplacian[rows, i * m + i] = laplacian[rows, j * m + j] = 1.0
    laplacian[rows, i * m + j] = laplacian[rows, j * m + i] = -1.0
    centre = np.full((m, m), 1.0 / m) + l2 * np.eye(m)  # fixes the sum-zero direction; adds the prior

    def loss_of(theta):
        d = theta @ incidence.T  # softplus(-d) = softplus(d) - d
        return (n * np.logaddexp(0.0, d) - a_ij * d).sum(1) + 0.5 * l2 * (theta**2).sum(1)

    theta = np.zeros((r_count, m)) if start is None else np.array(start, dtype=np.float64)
    theta -= theta.mean(1, keepdims=True)
    loss = loss_of(theta)
    for _ in range(max_iter):
        d = theta @ incidence.T
        p = _sigmoid(d)
        grad = -(a_ij - n * p) @ incidence + l2 * theta
        hess = ((n * p * (1.0 - p)) @ laplacian).reshape(r_count, m, m) + centre
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]
        step -= step.mean(1, keepdims=True)
        scale = np.ones(r_count)
        for _ in range(60):
            trial = theta + scale[:, None] * step
            new_loss = loss_of(trial)
            worse = new_loss > loss + 1e-13 * np.abs(loss)
            if not worse.any():
                break
            scale[worse] *= 0.5
        theta, loss = trial, new_loss
        if np.abs(scale[:, None] * step).max() < tol:
            return theta
    raise FitError(
        f"Newton did not converge in {max_iter} iterations (largest step "
        f"{np.abs(scale[:, None] * step).max():.3g}); are the judgments separable?"
    )
