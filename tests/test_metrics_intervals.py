"""Intervals of every metric: influence values against finite differences and brute force, KID
against torch-fidelity, FID∞ against a direct fit, and coverage by simulation (Gaussian worlds
where a metric's expectation at n is the mean over many repeated draws)."""

import numpy as np
import pytest
import torch
from metric_worlds import SLOW_WORLD_IDS, SLOW_WORLDS, World, paired_draw

from metrics import calculate_metrics
from metrics.calculate import NAMES, Options, register_metric
from metrics.fid import frechet_distance, gaussian_statistics
from metrics.fid_infinity import fid_infinity
from metrics.inception_score import inception_score, split_bounds
from metrics.influence import fid_influence, inception_score_influence
from metrics.kid import kid
from metrics.prc import knn_radii, precision_recall_hits
from metrics.recall_interval import half_recalls, knn_lists, prc_pairs
from torchvision_compat import ensure_torchvision

ensure_torchvision()  # before torch_fidelity

ALL = ["fid", "is", "precision", "recall", "clip_score", "kid", "fid_infinity"]
SMALL_KID = {"kid_subsets": 10, "kid_subset_size": 100}
PAIRED = {**SMALL_KID, "isc_splits": 2}  # the linearisation of IS needs splits of more than ~15 rows


def test_fid_influence_is_the_derivative_of_fid():
    """psi(x) = d/de FID((1-e) P_n + e delta_x) at e = 0, by a central finite difference."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 1.3, (300, 6))
    mu_r, s_r = gaussian_statistics(rng.normal(size=(400, 6)))
    mu, s = x.mean(0), np.cov(x, rowvar=False, bias=True)
    psi = fid_influence(x, mu, s, mu_r, s_r)
    for i in (0, 7, 123):
        c = x[i] - mu

        def fid_at(e, c=c):
            return frechet_distance(mu_r, s_r, mu + e * c, (1 - e) * s + e * (1 - e) * np.outer(c, c))

        e = 1e-5
        assert psi[i] == pytest.approx((fid_at(e) - fid_at(-e)) / (2 * e), rel=1e-5, abs=1e-7)


def test_inception_score_influence_is_the_derivative_of_each_split():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 5)) * 2
    psi = inception_score_influence(logits, splits=5)
    order, bounds = split_bounds(50, 5)

    def weighted_split(rows, weights):
        p = torch.as_tensor(logits[rows]).double().softmax(1).numpy()
        q = weights @ p
        return np.exp(weights @ (p * (np.log(p) - np.log(q))).sum(1))

    for i in (3, 17):
        j = next(b for b in range(5) if i in order[bounds[b][0] : bounds[b][1]])
        rows = order[bounds[j][0] : bounds[j][1]]
        m = len(rows)
        point = np.zeros(m)
        point[list(rows).index(i)] = 1

        def at(e, rows=rows, m=m, point=point):
            return weighted_split(rows, (1 - e) * np.full(m, 1 / m) + e * point)

        e = 1e-6
        derivative = (at(e) - at(-e)) / (2 * e)
        assert psi[i] == pytest.approx(derivative * 50 / (5 * m), rel=1e-5)
    assert inception_score(logits, 5)[0] == pytest.approx(
        np.mean([weighted_split(order[lo:hi], np.full(hi - lo, 1 / (hi - lo))) for lo, hi in bounds])
    )


def test_kid_equals_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    g = rng.normal(size=(260, 48)).astype(np.float32)
    r = (rng.normal(size=(240, 48)) * 1.1 + 0.05).astype(np.float32)
    ours = kid(g, r, subsets=7, subset_size=120, seed=5)
    theirs = kid_features_to_metric(
        torch.from_numpy(g),
        torch.from_numpy(r),
        kid_subsets=7,
        kid_subset_size=120,
        verbose=False,
        rng_seed=5,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
    )
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], abs=1e-6, rel=0)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], abs=1e-6, rel=0)
    out = calculate_metrics({"pool": g}, {"pool": r}, names=["kid"], kid_subsets=7, kid_subset_size=120, kid_seed=5)
    assert out["kid"] == ours["kid"]


def test_kid_leave_one_out_matches_recomputation():
    """The jackknife's KID without sample i == torch-fidelity's mmd2 on the subsets minus row i."""
    from torch_fidelity.metric_kid import mmd2

    from metrics.kid import polynomial_kernel

    rng = np.random.default_rng(3)
    g, r = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    out = kid(g, r, subsets=3, subset_size=20, seed=1)
    loo = out["kid"] - out["psi"] / 39  # psi = 39 (mean loo - loo): loo up to its mean
    state = np.random.RandomState(1)
    subsets = [(state.choice(40, 20, replace=False), state.choice(30, 20, replace=False)) for _ in range(3)]

    def value_without(i):
        vals = []
        for a, b in subsets:
            a = a[a != i]
            x, y = g[a].astype(np.float64), r[b].astype(np.float64)
            kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
            m, n = len(a), len(b)
            vals.append(
                (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2 * kxy.sum() / (m * n)
                if m != n
                else mmd2(kxx, kxy, kyy)
            )
        return np.mean(vals)

    brute = np.array([value_without(i) for i in range(40)])
    assert np.std(brute) > 1e-3  # the leave-one-out values differ far more than float32 rounding (1e-7)
    np.testing.assert_allclose(loo - loo.mean(), brute - brute.mean(), atol=1e-6)


def test_fid_infinity_against_a_direct_fit():
    rng = np.random.default_rng(4)
    x = rng.normal(0.1, 1.2, (900, 10)).astype(np.float32)
    mu_r, s_r = gaussian_statistics(rng.normal(size=(700, 10)))
    out = fid_infinity(x, mu_r, s_r, points=6, seed=3)
    order = np.random.default_rng(3).permutation(900)
    sizes = np.unique(np.linspace(150, 900, 6).astype(int))
    fids = [frechet_distance(mu_r, s_r, *gaussian_statistics(x[order[:n]].astype(np.float64))) for n in sizes]
    slope, intercept = np.polyfit(1 / sizes, fids, 1)
    np.testing.assert_allclose(out["fids"], fids, rtol=1e-9)
    assert out["fid_infinity"] == pytest.approx(intercept, rel=1e-9)
    assert slope > 0  # FID's bias falls with N


def test_recall_halves_equal_recomputation_and_full_decisions_equal_prc():
    rng = np.random.default_rng(5)
    gen, real = rng.normal(size=(70, 6)).astype(np.float32), rng.normal(0.3, 1, (50, 6)).astype(np.float32)
    rr = knn_radii(real)
    radii, dist, idx = knn_lists(gen, 3, 32, 16)
    assert torch.equal(radii, knn_radii(gen, 3, 16))
    gh, rh, j, gi, d = prc_pairs(gen, real, radii, dist[:, -1], rr, 16)
    gh0, rh0 = precision_recall_hits(gen, real, None, rr, 3, 16)
    assert np.array_equal(gh, gh0) and np.array_equal(rh, rh0)
    reps, size = half_recalls(50, dist, idx, j, gi, d, 3, halves=6, seed=2)
    state = np.random.default_rng(2)
    for value in reps:
        member = np.zeros(70, bool)
        member[state.choice(70, size, replace=False)] = True
        assert value == precision_recall_hits(gen[member], real, None, rr)[1].mean()


def test_intervals_contain_point_estimates_and_registry():
    w = World(d=8, n=200, n_ref=300)
    out = calculate_metrics(w.draw(np.random.default_rng(0)), w.reference(), names=ALL, ci=True, **SMALL_KID)
    for m in ALL:
        assert out[f"{m}_ci_low"] <= out[m] <= out[f"{m}_ci_high"] and out[f"{m}_se"] >= 0
        assert out[f"{m}_se"] > 0 or out[m] in (0.0, 1.0)  # precision/recall with every decision alike
    plain = calculate_metrics(w.draw(np.random.default_rng(0)), w.reference(), names=ALL, **SMALL_KID)
    assert {k: v for k, v in out.items() if k in plain} == plain  # intervals never move a point estimate
    with pytest.raises(ValueError, match="unknown metric name"):
        calculate_metrics(w.draw(np.random.default_rng(0)), w.reference(), names=["fidd"])
    register_metric(
        "mean_pool",
        lambda g, r, o: ({"mean_pool": float(g.pool.mean())}, {"mean_pool": lambda: g.pool.mean(1) - g.pool.mean()}),
        False,
        ("mean_pool",),
    )
    try:
        got = calculate_metrics(w.draw(np.random.default_rng(0)), names=["mean_pool"], ci=True)
        assert got["mean_pool_se"] > 0
    finally:
        from metrics.calculate import METRICS

        METRICS.pop("mean_pool")
        NAMES.pop("mean_pool")


def coverage(world: World, reps: int, seed: int = 123, names=tuple(ALL), options=None) -> dict:
    """{metric: (coverage of the mean over reps, mean SE / sd over reps)} (options: SMALL_KID)."""
    ref = world.reference()
    rng = np.random.default_rng(seed)
    options = SMALL_KID if options is None else options
    outs = [calculate_metrics(world.draw(rng), ref, names=list(names), ci=True, **options) for _ in range(reps)]
    result = {}
    for m in names:
        values = np.array([o[m] for o in outs])
        truth = values.mean()
        hit = np.mean([o[f"{m}_ci_low"] <= truth <= o[f"{m}_ci_high"] for o in outs])
        result[m] = (hit, np.mean([o[f"{m}_se"] for o in outs]) / values.std(ddof=1))
    return result


def test_coverage_every_metric_fast():
    """150 runs: the coverage estimate itself has a binomial SD of 1.8 points, so the band is
    widened by about one SD here; the slow test holds the 90-98% standard with 400 runs."""
    got = coverage(World(d=8, n=200, n_ref=300, shift=0.3, scale=1.2), reps=150)
    for m, (hit, ratio) in got.items():
        assert 0.88 <= hit <= 0.99 and 0.8 < ratio < 1.25, (m, hit, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("world", SLOW_WORLDS, ids=SLOW_WORLD_IDS)
def test_coverage_every_metric(world):
    got = coverage(world, reps=400)
    print(world, "(coverage, mean SE / SD):", got)
    for m, (hit, ratio) in got.items():
        assert 0.90 <= hit <= 0.98, (m, hit, ratio)


# ---------------------------------------------------------------- paired differences
def paired_coverage(
    world: World, reps: int, shift_b: float = 0.35, scale_b: float = 1.25, seed: int = 7, independent: float = 0.2
):
    from metrics.calculate import evaluate
    from metrics.paired import paired_differences, unpaired_se

    ref = world.reference()
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(reps):
        a, b = paired_draw(world, rng, shift_b, scale_b, independent)
        runs.append(paired_differences(a, b, ref, names=ALL, options=Options(**PAIRED)))
    a, b = paired_draw(world, np.random.default_rng(seed + 1), shift_b, scale_b, independent)
    _, psi_a = evaluate(a, ref, ALL, Options(**PAIRED), influence=True)
    _, psi_b = evaluate(b, ref, ALL, Options(**PAIRED), influence=True)
    result = {}
    for m in ALL:
        diffs = np.array([r[m]["difference"] for r in runs])
        truth = diffs.mean()
        hit = np.mean([r[m]["ci_low"] <= truth <= r[m]["ci_high"] for r in runs])
        width_ratio = (
            runs[-1][m]["se"] / unpaired_se(psi_a[m], psi_b[m])
            if m != "recall"
            else runs[-1][m]["se"] / np.hypot(psi_a[m].se(), psi_b[m].se())
        )
        result[m] = (hit, np.mean([r[m]["se"] for r in runs]) / diffs.std(ddof=1), width_ratio)
    return result


def test_paired_differences_cover_and_are_narrower_fast():
    """60 paired runs (coverage estimate SD ~2.8 points: a loose band here, 90-98% in the slow test);
    rows share 98% of their variance, as settings with one caption and noise per row do."""
    got = paired_coverage(World(d=8, n=150, n_ref=300, shift=0.3, scale=1.2), reps=60, independent=0.02)
    for m, (hit, ratio, narrower) in got.items():
        assert 0.85 <= hit <= 1.0 and 0.7 < ratio < 1.35, (m, hit, ratio)
        # 0/1 decisions flip independently near the manifold edges: less of them cancels
        assert narrower < (0.7 if m in ("precision", "recall") else 0.4), (m, narrower)


@pytest.mark.slow
def test_paired_differences_cover():
    got = paired_coverage(World(d=16, n=400, shift=0.3, scale=1.2), reps=400)
    print("paired d16n400 (coverage, mean SE / SD, paired / unpaired SE):", got)
    for m, (hit, ratio, narrower) in got.items():
        assert 0.90 <= hit <= 0.98, (m, hit, ratio, narrower)
        assert narrower < (0.95 if m in ("precision", "recall") else 0.8), (m, narrower)


def test_paired_difference_of_identical_settings_is_zero():
    from metrics.paired import paired_differences

    w = World(d=8, n=200, n_ref=300)
    a = w.draw(np.random.default_rng(3))
    out = paired_differences(a, a, w.reference(), names=ALL, options=Options(**PAIRED))
    for m in ALL:
        assert out[m]["difference"] == 0 and out[m]["se"] == 0 and not out[m]["distinguishable"]
    with pytest.raises(ValueError, match="same samples"):
        paired_differences(a, {"pool": a["pool"][:150]}, w.reference(), names=["fid"])
