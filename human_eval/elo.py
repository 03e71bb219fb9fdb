"""Elo analysis of one set of judgments per question: point fit, bootstrap intervals, ranks,
win rates. `analyze` is the entry point; `EloResult` turns into the output tables."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from human_eval.bootstrap import bootstrap_ratings
from human_eval.fit import (
    ELO_PER_NAT,
    FitError,
    PairCounts,
    check_identifiable,
    comparison_groups,
    fit_elo,
    pair_counts,
)
from human_eval.judgments import Judgments, cut, short

DEFAULT_ROUNDS = 1000
DEFAULT_LEVEL = 0.95


def win_probability(rating_i, rating_j):
    """P(i beats j) under the Elo model (a tie counting half)."""
    return 1.0 / (1.0 + 10.0 ** ((np.asarray(rating_j) - np.asarray(rating_i)) / 400.0))


@dataclass
class EloResult:
    """Ratings of ``models`` for one question; ``replicates`` holds the finite bootstrap
    ratings (R_ok, M) normalised like ``ratings`` (anchored inside each replicate)."""

    question: str
    models: list[str]
    pairs: PairCounts
    ratings: np.ndarray
    replicates: np.ndarray
    replicate_counts: np.ndarray
    anchor: str | None
    level: float
    rounds: int
    l2: float
    separable_replicates: int = 0
    warnings: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # comparison group per model (see fit.comparison_groups)

    def group_of(self) -> np.ndarray:
        return np.zeros(len(self.models), np.int64) if self.groups is None else self.groups

    def group_names(self) -> list[list[str]]:
        """The models of each comparison group (one group when the graph is connected)."""
        groups = self.group_of()
        return [[m for m, g in zip(self.models, groups) if g == k] for k in range(int(groups.max(initial=0)) + 1)]

    def _quantiles(self, x, method="linear"):
        if len(x) == 0:
            nan = np.full(x.shape[1:], np.nan)
            return nan, nan
        q = (1.0 - self.level) / 2.0
        quantile = np.nanquantile if np.isnan(x).any() else np.quantile  # NaN: pair unseen in a replicate
        with np.errstate(all="ignore"):
            return quantile(x, q, axis=0, method=method), quantile(x, 1.0 - q, axis=0, method=method)

    def ratings_table(self) -> pd.DataFrame:
        """One row per model, best first: rating with its interval, rank with its interval, counts."""
        lower, upper = self._quantiles(self.replicates)
        rank = _ranks(self.ratings[None])[0]
        replicate_ranks = _ranks(self.replicates).astype(float)
        rank_lower = self._quantiles(replicate_ranks, "lower")[0]
        rank_upper = self._quantiles(replicate_ranks, "higher")[1]
        pc, m = self.pairs, len(self.models)
        wins = np.bincount(pc.i, pc.counts[:, 0], m) + np.bincount(pc.j, pc.counts[:, 1], m)
        losses = np.bincount(pc.i, pc.counts[:, 1], m) + np.bincount(pc.j, pc.counts[:, 0], m)
        ties = np.bincount(pc.i, pc.counts[:, 2], m) + np.bincount(pc.j, pc.counts[:, 2], m)
        table = pd.DataFrame(
            {
                "question": self.question,
                "model": self.models,
                "rating": self.ratings,
                "lower": lower,
                "upper": upper,
                "rank": rank,
                "rank_lower": rank_lower,
                "rank_upper": rank_upper,
                "n_judgments": (wins + losses + ties).astype(np.int64),
                "wins": wins.astype(np.int64),
                "losses": losses.astype(np.int64),
                "ties": ties.astype(np.int64),
                "anchor": self.anchor or "",
                "level": self.level,
                "rounds": self.rounds,
                "valid_rounds": len(self.replicates),
                "l2": self.l2,
            }
        )
        for col in ("rank_lower", "rank_upper"):
            table[col] = table[col].astype("Int64") if table[col].isna().any() else table[col].astype(np.int64)
        return table.sort_values(["rank", "model"], ignore_index=True)  # ties by name, not by float noise

    def pairs_table(self) -> pd.DataFrame:
        """Every ordered pair (model, opponent): judgments, wins/losses/ties, the observed win
        rate (ties half; Table 3 style) and the Elo-predicted win probability, each with its
        bootstrap interval. Pairs never compared have n = 0 and no observed win rate; pairs in
        different comparison groups (no chain of comparisons joins them) have no prediction (NaN)."""
        pc, m = self.pairs, len(self.models)
        first = np.concatenate([pc.i, pc.j])
        second = np.concatenate([pc.j, pc.i])
        counts = np.concatenate([pc.counts, pc.counts[:, [1, 0, 2]]])
        rep_counts = np.concatenate([self.replicate_counts, self.replicate_counts[..., [1, 0, 2]]], axis=1)
        n = counts.sum(1)
        with np.errstate(all="ignore"):
            rate = (counts[:, 0] + 0.5 * counts[:, 2]) / n
            rep_rate = (rep_counts[..., 0] + 0.5 * rep_counts[..., 2]) / rep_counts.sum(-1)
        rate_lower, rate_upper = self._quantiles(rep_rate)
        compared = pd.DataFrame(
            {
                "model": first,
                "opponent": second,
                "n": n.astype(np.int64),
                "wins": counts[:, 0].astype(np.int64),
                "losses": counts[:, 1].astype(np.int64),
                "ties": counts[:, 2].astype(np.int64),
                "win_rate": rate,
                "win_rate_lower": rate_lower,
                "win_rate_upper": rate_upper,
            }
        )
        grid = pd.DataFrame([(a, b) for a in range(m) for b in range(m) if a != b], columns=["model", "opponent"])
        table = grid.merge(compared, how="left", on=["model", "opponent"])
        for col in ("n", "wins", "losses", "ties"):
            table[col] = table[col].fillna(0).astype(np.int64)
        a, b = table["model"].to_numpy(), table["opponent"].to_numpy()
        table["predicted"] = win_probability(self.ratings[a], self.ratings[b])
        table["predicted_lower"], table["predicted_upper"] = self._quantiles(
            win_probability(self.replicates[:, a], self.replicates[:, b])
        )
        unconnected = self.group_of()[a] != self.group_of()[b]  # no chain of comparisons: nothing to predict
        table.loc[unconnected, ["predicted", "predicted_lower", "predicted_upper"]] = np.nan
        names = np.array(self.models, dtype=object)
        table["model"], table["opponent"] = names[a], names[b]
        table.insert(0, "question", self.question)
        return table

    def winrate_matrix(self) -> pd.DataFrame:
        """Observed win rate of the row model over the column model (ties half), models in
        rating order; NaN where a pair was never compared."""
        pc, m = self.pairs, len(self.models)
        rates = np.full((m, m), np.nan)
        rates[pc.i, pc.j] = (pc.counts[:, 0] + 0.5 * pc.counts[:, 2]) / pc.counts.sum(1)
        rates[pc.j, pc.i] = 1.0 - rates[pc.i, pc.j]
        order = np.argsort(-self.ratings, kind="stable")
        names = [self.models[k] for k in order]
        matrix = pd.DataFrame(rates[np.ix_(order, order)], columns=names)
        matrix.insert(0, "model", names)
        matrix.insert(0, "question", self.question)
        return matrix

    def summary(self) -> dict:
        return {
            "question": self.question,
            "judgments": self.pairs.n_judgments,
            "models": len(self.models),
            "anchor": self.anchor,
            "rounds": self.rounds,
            "valid_rounds": len(self.replicates),
            "separable_replicates": self.separable_replicates,
            "warnings": list(self.warnings),
            "comparison_groups": self.group_names(),
        }


# ratings closer than this (Elo points) are equal: an anchored fit leaves float noise (2.8e-14 for a
# model as strong as the anchor), which must not decide a rank
RANK_TOLERANCE = 1e-9


def _ranks(ratings: np.ndarray) -> np.ndarray:
    """1 + the number of models rated higher by more than `RANK_TOLERANCE`, per row of (R, M)
    ratings: equal ratings share a rank (1, 1, 3)."""
    return 1 + (ratings[:, None, :] > ratings[:, :, None] + RANK_TOLERANCE).sum(-1)


def question_seed(seed: int, question: str) -> np.random.Generator:
    """The bootstrap generator of one question: depends on the seed and the question's name
    only, so fitting one question alone gives the same intervals as fitting all of them."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(question.encode())]))


def fit_question(
    pc: PairCounts,
    question: str = "all",
    anchor: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    l2: float = 0.0,
    level: float = DEFAULT_LEVEL,
) -> EloResult:
    """Point ratings and bootstrap intervals of one question's judgments."""
    if anchor is not None and anchor not in pc.models:
        raise FitError(
            f"anchor model {short(anchor)} has no judgments for question {short(question)} "
            f"(models: {', '.join(map(cut, pc.models))})"
        )
    if not 0 < level < 1:
        raise FitError(f"level must be in (0, 1), got {level}")
    try:
        ratings = fit_elo(pc, l2)
    except FitError as e:
        raise FitError(f"question {short(question)}: {e}") from None
    groups = comparison_groups(pc)
    warnings = []
    if l2 > 0:
        warnings += [
            f"{p} (finite only because of --l2 {l2:g}; these ratings depend on the penalty)"
            for p in check_identifiable(pc)
            if not p.startswith("the comparison graph is disconnected")
        ]
    if groups.max(initial=0) > 0:
        names = "; ".join(
            "{" + ", ".join(map(cut, g)) + "}"
            for g in ([m for m, k in zip(pc.models, groups) if k == c] for c in range(groups.max() + 1))
        )
        warnings.append(
            f"the comparison graph is disconnected: ratings are comparable only within each group of "
            f"models, not across groups (their offsets are set by --l2 {l2:g} alone): {names}; "
            "pairs across groups get no predicted win probability (left empty)"
        )
    theta, counts, ok = bootstrap_ratings(pc, ratings / ELO_PER_NAT, rounds, question_seed(seed, question), l2)
    replicates = theta[ok] * ELO_PER_NAT
    separable = int((~ok).sum())
    if separable:
        warnings.append(
            f"{separable} of {rounds} bootstrap replicates were separable or disconnected "
            "(infinite ratings) and were left out, so the intervals understate the "
            "uncertainty; pass --l2 (e.g. 0.01) to keep every replicate finite"
        )
    if anchor is not None:
        k = pc.models.index(anchor)
        ratings = ratings - ratings[k]
        replicates = replicates - replicates[:, k : k + 1]
    return EloResult(
        question,
        list(pc.models),
        pc,
        ratings,
        replicates,
        counts[ok],
        anchor,
        level,
        rounds,
        l2,
        separable,
        warnings,
        groups,
    )


def analyze(
    judgments: Judgments | pd.DataFrame,
    question: str | None = None,
    anchor: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    l2: float = 0.0,
    level: float = DEFAULT_LEVEL,
    progress: bool = False,
) -> list[EloResult]:
    """Fit every question of the judgments separately (or only ``question``)."""
    frame = judgments.frame if isinstance(judgments, Judgments) else judgments
    anchor = None if anchor is None else anchor.strip()  # like the names in the file
    question = None if question is None else question.strip()
    if len(frame) == 0:
        raise FitError("no valid judgments")
    questions = sorted(frame["question"].unique())
    if question is not None:
        if question not in questions:
            raise FitError(f"no judgments for question {short(question)} (questions: {', '.join(map(cut, questions))})")
        questions = [question]
    from tqdm import tqdm

    results = []
    for q in tqdm(questions, desc="elo", unit="question", disable=not progress or len(questions) < 2):
        part = frame[frame["question"] == q]
        pc = pair_counts(part["model_a"], part["model_b"], part["winner"])
        results.append(fit_question(pc, q, anchor, rounds, seed, l2, level))
    return results
