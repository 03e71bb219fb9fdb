"""Elo fit, bootstrap intervals, diagnostics: against an independent logistic-regression fit,
the asymptotic standard errors, and simulations from known ratings."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from human_eval.bootstrap import identifiable_batch, resample_counts
from human_eval.elo import analyze, fit_question, win_probability
from human_eval.fit import ELO_PER_NAT, FitError, check_identifiable, fit_elo, newton_batch, pair_counts


def simulate(ratings, n, rng, tie_strength=0.3, names=None):
    """Judgments from Elo ``ratings``, with ties: P(tie) = 4 c p (1 - p) and P(i wins) = p - P(tie)/2,
    so the expected score of i (ties half) is exactly p and the half-win estimator is consistent."""
    m = len(ratings)
    names = np.array(names or [f"m{k}" for k in range(m)], dtype=object)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p = win_probability(ratings[a], ratings[b])
    tie = 4 * tie_strength * p * (1 - p)
    u = rng.random(n)
    winner = np.where(u < p - tie / 2, "a", np.where(u < p + tie / 2, "tie", "b"))
    return pd.DataFrame({"model_a": names[a], "model_b": names[b], "winner": winner})


def simulated_questions(ratings, judgments: int, questions: int, first_seed: int):
    """(seed, pair counts) of `questions` simulated questions of `judgments` judgments each from Elo
    `ratings`; question `seed` (0, 1, ...) draws from np.random.default_rng(first_seed + seed)."""
    for seed in range(questions):
        frame = simulate(ratings, judgments, np.random.default_rng(first_seed + seed))
        yield seed, pair_counts(frame["model_a"], frame["model_b"], frame["winner"])


def independent_fit(frame, l2=0.0):
    """Bradley-Terry as a weighted logistic regression on natural-log odds: one row per
    judgment (a tie = two rows of weight 1/2 with y = 1 and y = 0), design x = e_a - e_b with
    the first model's column dropped (unless penalised), fitted by scipy Newton-CG with an
    explicit X^T W X hessian; converted to Elo by 400/ln(10) and centred."""
    models = sorted(set(frame["model_a"]) | set(frame["model_b"]))
    col = {m: k for k, m in enumerate(models)}
    rows, y, w = [], [], []
    for a, b, win in frame[["model_a", "model_b", "winner"]].itertuples(index=False):
        x = np.zeros(len(models))
        x[col[a]], x[col[b]] = 1.0, -1.0
        for yy, ww in {"a": [(1.0, 1.0)], "b": [(0.0, 1.0)], "tie": [(1.0, 0.5), (0.0, 0.5)]}[win]:
            rows.append(x)
            y.append(yy)
            w.append(ww)
    X, y, w = np.array(rows), np.array(y), np.array(w)
    if l2 == 0:
        X = X[:, 1:]

    def f(beta):
        z = X @ beta
        return np.sum(w * (np.logaddexp(0, z) - y * z)) + 0.5 * l2 * beta @ beta

    def g(beta):
        return X.T @ (w * (1 / (1 + np.exp(-(X @ beta))) - y)) + l2 * beta

    def h(beta):
        p = 1 / (1 + np.exp(-(X @ beta)))
        return (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.eye(X.shape[1])

    res = minimize(f, np.zeros(X.shape[1]), jac=g, hess=h, method="Newton-CG", options={"xtol": 1e-14})
    beta = res.x if l2 else np.concatenate([[0.0], res.x])
    elo = beta * 400 / np.log(10)
    return models, elo - elo.mean(), X, w, res


@pytest.mark.parametrize("seed,l2", [(0, 0.0), (1, 0.0), (2, 0.5)])
def test_matches_independent_logistic_regression(seed, l2):
    rng = np.random.default_rng(seed)
    frame = simulate(rng.normal(0, 150, 6), 1500, rng)
    models, expected, _, _, res = independent_fit(frame, l2)
    assert res.success and np.abs(res.jac).max() < 1e-7
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    assert pc.models == models
    got = fit_elo(pc, l2)
    assert abs(got.sum()) < 1e-9
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_batched_newton_equals_single_fits():
    rng = np.random.default_rng(3)
    frame = simulate(np.array([0.0, 50, 100, -80, 20]), 800, rng)
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    tables = resample_counts(pc, 5, rng)
    batch = newton_batch(tables, pc.i, pc.j, pc.n_models) * ELO_PER_NAT  # cold start at 0
    for table, row in zip(tables, batch):
        single = fit_elo(type(pc)(pc.models, pc.i, pc.j, table))
        np.testing.assert_allclose(row, single, atol=1e-6)


def test_resampled_counts_keep_total_and_cell_means():
    rng = np.random.default_rng(4)
    frame = simulate(np.array([0.0, 100, 200]), 600, rng)
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    tables = resample_counts(pc, 4000, np.random.default_rng(0))
    assert (tables.sum(axis=(1, 2)) == 600).all()
    # each cell is Binomial(N, c/N): mean c, variance c (1 - c/N)
    c = pc.counts
    assert np.all(np.abs(tables.mean(0) - c) <= 4 * np.sqrt(c / 4000) + 1e-9)
    np.testing.assert_allclose(tables.var(0), c * (1 - c / 600), rtol=0.1)


def test_bootstrap_sd_matches_fisher_information():
    """Without ties the bootstrap SD of rating differences is the inverse-Fisher SE."""
    rng = np.random.default_rng(5)
    frame = simulate(np.array([0.0, 60, 120, -40]), 4000, rng, tie_strength=0.0)
    models, elo, X, w, _ = independent_fit(frame)
    p = 1 / (1 + np.exp(-(X @ (elo[1:] - elo[0]) / ELO_PER_NAT)))
    info = (X * (w * p * (1 - p))[:, None]).T @ X
    se = np.sqrt(np.diag(np.linalg.inv(info))) * ELO_PER_NAT  # of m_k - m_0, k >= 1
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    result = fit_question(pc, anchor=models[0], rounds=2000, seed=1)
    sd = result.replicates.std(0)[1:]
    np.testing.assert_allclose(sd, se, rtol=0.1)
    assert np.all(result.replicates[:, 0] == 0)


def test_recovers_known_ratings_with_nominal_coverage():
    truth = np.array([-150.0, -60, 0, 40, 90, 160])
    truth -= truth.mean()
    covered, errors = [], []
    for seed, pc in simulated_questions(truth, 3000, 40, first_seed=100):
        table = fit_question(pc, rounds=300, seed=seed).ratings_table().set_index("model").loc[pc.models]
        covered.append((table["lower"] <= truth) & (truth <= table["upper"]))
        errors.append(table["rating"].to_numpy() - truth)
    coverage = np.mean(covered)
    assert 0.89 <= coverage <= 0.99, coverage
    errors = np.array(errors)
    assert np.abs(errors.mean(0)).max() < 8  # unbiased (SE of the mean ~ 3 Elo)
    assert np.abs(errors).max() < 80


@pytest.mark.slow
def test_coverage_study_large():
    truth = np.array([-200.0, -100, -30, 0, 30, 60, 120, 200])
    truth -= truth.mean()
    covered, covered_anchor = [], []
    for seed, pc in simulated_questions(truth, 5000, 300, first_seed=10_000):
        for anchor, out, target in ((None, covered, truth), ("m0", covered_anchor, truth - truth[0])):
            t = fit_question(pc, anchor=anchor, rounds=1000, seed=seed).ratings_table().set_index("model")
            t = t.loc[[m for m in pc.models if m != anchor]]
            tgt = target if anchor is None else target[1:]
            out.append((t["lower"] <= tgt) & (tgt <= t["upper"]))
    assert 0.93 <= np.mean(covered) <= 0.97
    assert 0.93 <= np.mean(covered_anchor) <= 0.97


def _frame(rows):
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_separable_data_names_the_models():
    frame = _frame([("top", "x", "a"), ("y", "top", "b"), ("x", "y", "a"), ("y", "x", "a"), ("x", "y", "tie")])
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    problems = check_identifiable(pc)
    assert problems == ["the data is separable: {top} never lost (or tied) against {x, y}"]
    with pytest.raises(FitError, match=r"\{top\} never lost.*--l2"):
        fit_elo(pc)
    frame = _frame([("a1", "b1", "a"), ("b1", "a1", "a"), ("bottom", "a1", "b"), ("b1", "bottom", "a")])
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    assert check_identifiable(pc) == ["the data is separable: {bottom} never won (or tied) against {a1, b1}"]
    # a tie is half a win: it makes the data identifiable
    frame = _frame([("top", "x", "a"), ("x", "top", "tie")])
    assert check_identifiable(pair_counts(frame["model_a"], frame["model_b"], frame["winner"])) == []


def test_disconnected_graph_names_the_components():
    frame = _frame([("a", "b", "a"), ("b", "a", "a"), ("c", "d", "a"), ("d", "c", "a"), ("e", "d", "tie")])
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    (msg,) = check_identifiable(pc)
    assert "disconnected: 2 groups" in msg and "{a, b}; {c, d, e}" in msg
    with pytest.raises(FitError, match="disconnected"):
        analyze(frame.assign(question="q"), rounds=10)


def test_l2_makes_separable_data_finite_and_matches_independent_fit():
    frame = _frame([("top", "x", "a")] * 5 + [("x", "y", "a"), ("y", "x", "a"), ("y", "top", "b")])
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    ratings = fit_elo(pc, l2=0.1)
    models, expected, *_ = independent_fit(frame, l2=0.1)
    np.testing.assert_allclose(ratings, expected, atol=1e-6)
    assert ratings[pc.models.index("top")] == ratings.max()
    result = fit_question(pc, rounds=200, l2=0.1)
    assert result.separable_replicates == 0 and len(result.replicates) == 200
    assert any("never lost" in w and "--l2 0.1" in w for w in result.warnings)


def test_identifiable_batch_agrees_with_graph_check():
    rng = np.random.default_rng(6)
    frame = simulate(np.array([0.0, 100, 200, 300, 400]), 40, rng, tie_strength=0.05)
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    tables = resample_counts(pc, 300, rng)
    fast = identifiable_batch(tables, pc.i, pc.j, pc.n_models)
    slow = [not check_identifiable(type(pc)(pc.models, pc.i, pc.j, t)) for t in tables]
    assert fast.tolist() == slow and 0 < fast.sum() < len(fast)


def test_separable_replicates_are_counted_and_reported():
    frame = _frame([("m1", "m0", "a")] * 18 + [("m0", "m1", "a")] * 2)  # P(no m0 win) = 0.9^20 = 12%
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    assert not check_identifiable(pc)
    result = fit_question(pc, rounds=500, seed=0)
    assert 30 < result.separable_replicates < 100
    assert len(result.replicates) == 500 - result.separable_replicates
    assert np.isfinite(result.replicates).all()
    assert "separable or disconnected" in result.warnings[0]


def test_anchoring_is_inside_each_replicate():
    rng = np.random.default_rng(8)
    frame = simulate(np.array([0.0, 40, 80, 120]), 1500, rng)
    pc = pair_counts(frame["model_a"], frame["model_b"], frame["winner"])
    free = fit_question(pc, rounds=400, seed=3)
    anchored = fit_question(pc, anchor="m1", rounds=400, seed=3)
    np.testing.assert_allclose(anchored.ratings, free.ratings - free.ratings[1], atol=1e-9)
    np.testing.assert_allclose(anchored.replicates, free.replicates - free.replicates[:, [1]], atol=1e-9)
    t = anchored.ratings_table().set_index("model")
    assert t.loc["m1", ["rating", "lower", "upper"]].tolist() == [0, 0, 0]
    diff = free.replicates[:, 3] - free.replicates[:, 1]
    assert t.loc["m3", "lower"] == pytest.approx(np.percentile(diff, 2.5))
    naive = free.ratings_table().set_index("model").loc["m3", "lower"] - free.ratings[1]
    assert abs(t.loc["m3", "lower"] - naive) > 1
    with pytest.raises(FitError, match="anchor model 'nope'"):
        fit_question(pc, anchor="nope", rounds=10)


def test_per_question_fits_are_separate_and_reproducible():
    rng = np.random.default_rng(9)
    a = simulate(np.array([0.0, 100, 200]), 900, rng).assign(question="photorealism")
    b = simulate(np.array([0.0, -100, 50]), 900, rng).assign(question="caption")
    both = analyze(pd.concat([a, b]), rounds=200, seed=5)
    assert [r.question for r in both] == ["caption", "photorealism"]
    alone = analyze(pd.concat([a, b]), question="photorealism", rounds=200, seed=5)[0]
    direct = fit_question(pair_counts(a["model_a"], a["model_b"], a["winner"]), "photorealism", rounds=200, seed=5)
    np.testing.assert_allclose(both[1].ratings, direct.ratings)
    np.testing.assert_allclose(both[1].replicates, alone.replicates)
    np.testing.assert_allclose(alone.replicates, direct.replicates)
    assert both[0].ratings[1] < both[0].ratings[0] < both[0].ratings[2]  # caption order m1 < m0 < m2
    with pytest.raises(FitError, match="no judgments for question 'x'"):
        analyze(a, question="x", rounds=1)


def test_tables_ranks_and_win_rates():
    frame = _frame(
        [("p", "q", "a")] * 30
        + [("q", "p", "a")] * 10
        + [("p", "q", "tie")] * 4
        + [("q", "r", "a")] * 30
        + [("r", "q", "a")] * 12
        + [("p", "r", "a")] * 20
        + [("r", "p", "tie")] * 2
    )
    result = analyze(frame.assign(question="all"), rounds=300, seed=0)[0]
    ratings = result.ratings_table()
    assert ratings["model"].tolist() == ["p", "q", "r"] and ratings["rank"].tolist() == [1, 2, 3]
    assert (ratings["rank_lower"] <= ratings["rank"]).all() and (ratings["rank"] <= ratings["rank_upper"]).all()
    assert ratings.loc[0, ["wins", "losses", "ties", "n_judgments"]].tolist() == [50, 10, 6, 66]
    pairs = result.pairs_table().set_index(["model", "opponent"])
    assert pairs.loc[("p", "q"), ["n", "wins", "losses", "ties"]].tolist() == [44, 30, 10, 4]
    assert pairs.loc[("p", "q"), "win_rate"] == pytest.approx(32 / 44)
    assert pairs.loc[("q", "p"), "win_rate"] == pytest.approx(12 / 44)
    lo, hi = pairs.loc[("p", "q"), ["win_rate_lower", "win_rate_upper"]]
    assert lo < 32 / 44 < hi
    r = dict(zip(result.models, result.ratings))
    assert pairs.loc[("p", "r"), "predicted"] == pytest.approx(1 / (1 + 10 ** ((r["r"] - r["p"]) / 400)))
    matrix = result.winrate_matrix().set_index("model")
    assert matrix.loc["p", "q"] + matrix.loc["q", "p"] == pytest.approx(1)
    assert np.isnan(matrix.loc["p", "p"])


def test_pair_counts_rejects_bad_input_and_ignores_sides():
    with pytest.raises(FitError, match="winner must be"):
        pair_counts(["x"], ["y"], ["draw"])
    with pytest.raises(FitError, match="compared with itself"):
        pair_counts(["x"], ["x"], ["a"])
    pc = pair_counts(["x", "y", "y", "x"], ["y", "x", "x", "y"], ["a", "a", "b", "tie"])
    assert pc.models == ["x", "y"] and pc.counts.tolist() == [[2, 1, 1]]
