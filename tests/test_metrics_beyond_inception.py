"""FD on any extractor, CMMD, density and coverage: values against independent computations
(prdc, a direct float64 CMMD, the closed-form FD) and their intervals by simulation."""

import numpy as np
import pytest
import torch
from metric_worlds import SLOW_WORLD_IDS, SLOW_WORLDS, World, paired_draw
from test_metrics_intervals import coverage as interval_coverage

from metrics import calculate_metrics
from metrics.calculate import Options, evaluate
from metrics.cmmd import cmmd, reference_term
from metrics.density_coverage import density_coverage, density_coverage_pairs, real_radii
from metrics.features import FeatureAccumulator, FeatureError, FeatureSets
from metrics.fid import frechet_distance, gaussian_statistics
from metrics.paired import paired_differences
from metrics.reference import reference_from_accumulator

pytestmark = pytest.mark.usefixtures("one_thread")

NEW = ["fd_dinov2", "fd_clip", "cmmd", "density", "coverage"]


def direct_cmmd(x, y, sigma=10.0, scale=1000.0, unbiased=True):
    """The paper's formula, written out in float64 with full kernel matrices."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if unbiased:
        xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return scale * (xx + yy - 2 * kxy.mean())


@pytest.mark.parametrize("unbiased", [True, False])
def test_cmmd_equals_the_direct_float64_formula(unbiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 24)) + 0.3
    y = rng.normal(size=(170, 24)) * 1.2
    want = direct_cmmd(x, y, unbiased=unbiased)
    exact = cmmd(x, y, unbiased=unbiased, dtype=torch.float64)["cmmd"]
    assert exact == pytest.approx(want, rel=1e-12, abs=1e-12)
    fast = cmmd(x, y, unbiased=unbiased)["cmmd"]  # float32 products, float64 sums
    assert fast == pytest.approx(want, rel=1e-5)
    cached = cmmd(
        x, y, unbiased=unbiased, dtype=torch.float64, ref_term=reference_term(y, dtype=torch.float64, unbiased=unbiased)
    )
    assert cached["cmmd"] == pytest.approx(exact, rel=1e-14)
    # other sigma / scale follow the formula too
    assert cmmd(x, y, sigma=0.7, scale=3, dtype=torch.float64)["cmmd"] == pytest.approx(
        direct_cmmd(x, y, 0.7, 3), rel=1e-12
    )


def test_cmmd_influence_is_the_first_order_change():
    """Removing generated sample i changes the U-statistic by -psi_i / (n - 2) to first order: the
    leave-one-out values recomputed directly have psi's shape (correlation ~1)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 5)) + 0.5, rng.normal(size=(80, 5))
    full = cmmd(x, y, sigma=1.0, dtype=torch.float64)
    loo = np.array([direct_cmmd(np.delete(x, i, 0), y, 1.0) for i in range(60)])
    assert np.corrcoef(full["psi"], -(loo - loo.mean()))[0, 1] > 0.999
    assert np.allclose(-(loo - loo.mean()) * 59, full["psi"], rtol=0.05, atol=0.05 * np.abs(full["psi"]).max())


@pytest.mark.parametrize(("n_real", "n_gen", "dim", "block"), [(300, 250, 16, 4096), (257, 301, 40, 64)])
def test_density_coverage_equal_prdc(n_real, n_gen, dim, block):
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(n_real)
    real = rng.normal(size=(n_real, dim)).astype(np.float32)
    gen = (rng.normal(size=(n_gen, dim)) * 1.15 + 0.2).astype(np.float32)
    want = prdc.compute_prdc(real_features=real, fake_features=gen, nearest_k=5)
    got = density_coverage(gen, real, block=block)
    assert got["density"] == pytest.approx(want["density"], abs=1e-7)
    assert got["coverage"] == pytest.approx(want["coverage"], abs=1e-7)
    cached = density_coverage(gen, real, radii=real_radii(real, 5, block=97))
    assert (cached["density"], cached["coverage"]) == (got["density"], got["coverage"])
    for k in (1, 3):
        other = prdc.compute_prdc(real_features=real, fake_features=gen, nearest_k=k)
        mine = density_coverage(gen, real, k=k)
        assert (mine["density"], mine["coverage"]) == pytest.approx((other["density"], other["coverage"]), abs=1e-7)


def test_coverage_variance_estimate_is_the_pairwise_formula():
    """BallHits' grouped sum equals sum_{u,v} w_u w_v 1[R_u = R_v] g(|R_u|) written out (g(0) = 0,
    g(odd) = 1, g(even) = -1), and the paired difference of a setting with itself is 0."""
    rng = np.random.default_rng(4)
    real = rng.normal(size=(90, 3)).astype(np.float32)
    gen = (rng.normal(size=(70, 3)) + 0.3).astype(np.float32)
    hits = density_coverage(gen, real)["coverage_hits"]
    _, reals, gens = density_coverage_pairs(gen, real, real_radii(real))
    sets = [frozenset(gens[reals == i].tolist()) for i in range(90)]
    want = sum(
        (1.0 if len(sets[u]) % 2 else -1.0) / 90**2
        for u in range(90)
        for v in range(90)
        if sets[u] == sets[v] and sets[u]
    )
    assert hits.variance() == pytest.approx(max(want, 0.0), rel=1e-12) and want > 0
    assert (hits - hits).se() == 0


def test_fd_on_any_extractor_is_the_closed_form_and_roles_pick_their_features():
    rng = np.random.default_rng(5)
    inc_g, inc_r = rng.normal(size=(120, 6)), rng.normal(size=(130, 6)) + 0.1
    dino_g, dino_r = rng.normal(size=(120, 9)) * 1.3, rng.normal(size=(130, 9))
    clip_g, clip_r = rng.normal(size=(120, 7)) + 1, rng.normal(size=(130, 7)) + 1.2
    gen = FeatureSets(inception={"pool": inc_g}, dinov2={"pool": dino_g}, clip={"pool": clip_g})
    ref = FeatureSets(inception={"pool": inc_r}, dinov2={"pool": dino_r}, clip={"pool": clip_r})
    out = calculate_metrics(gen, ref, names=["fid", "fd_dinov2", "fd_clip", "cmmd", "density"], ci=True)

    def fd(a, b):
        return frechet_distance(*gaussian_statistics(b.astype(np.float32)), *gaussian_statistics(a.astype(np.float32)))

    assert out["fid"] == pytest.approx(fd(inc_g, inc_r), rel=1e-10)
    assert out["fd_dinov2"] == pytest.approx(fd(dino_g, dino_r), rel=1e-10)
    assert out["fd_clip"] == pytest.approx(fd(clip_g, clip_r), rel=1e-10)
    assert out["cmmd"] == pytest.approx(direct_cmmd(clip_g.astype(np.float32), clip_r.astype(np.float32)), rel=1e-5)
    assert out["density"] == density_coverage(dino_g, dino_r)["density"]
    for m in ("fd_dinov2", "fd_clip", "cmmd", "density"):
        assert out[f"{m}_ci_low"] <= out[m] <= out[f"{m}_ci_high"]
    with pytest.raises(FeatureError, match="no dinov2 features"):
        calculate_metrics(FeatureSets(inception={"pool": inc_g}), ref, names=["fd_dinov2"])


def test_reference_caches_density_radii_and_cmmd_term_and_refuses_another_protocol():
    rng = np.random.default_rng(6)
    real, gen = rng.normal(size=(80, 5)), rng.normal(size=(70, 5)) + 0.2
    acc = FeatureAccumulator(meta={"extractor": "x", "extractor_sha256": "s", "protocol": "p1"})
    acc.add_features(real)
    dino = reference_from_accumulator(acc, {}, role="dinov2")
    clip = reference_from_accumulator(acc, {}, role="clip")
    assert dino.meta["dc_k"] == 5 and np.array_equal(dino.dc_radii, real_radii(real.astype(np.float32)))
    assert dino.radii is None and "cmmd_reference_term" not in dino.meta
    assert clip.meta["cmmd_reference_term"]["value"] == pytest.approx(reference_term(real.astype(np.float32)))
    g = {"pool": gen, "extractor": "x", "extractor_sha256": "s", "protocol": "p1"}
    a = calculate_metrics(g, dino, names=["density", "coverage"])
    b = calculate_metrics({"pool": gen}, {"pool": real}, names=["density", "coverage"])
    assert (a["density"], a["coverage"]) == (b["density"], b["coverage"])
    assert calculate_metrics(g, clip, names=["cmmd"])["cmmd"] == pytest.approx(
        calculate_metrics({"pool": gen}, {"pool": real}, names=["cmmd"])["cmmd"], rel=1e-12
    )
    with pytest.raises(FeatureError, match="protocol 'p2'.*'p1'"):
        calculate_metrics({**g, "protocol": "p2"}, dino, names=["density"])


# ---------------------------------------------------------------- intervals by simulation
def coverage(world: World, reps: int, names=NEW, seed: int = 321) -> dict:
    return interval_coverage(world, reps, seed, names, options={})


def test_coverage_new_metrics_fast():
    """120 runs (the coverage estimate's binomial SD is ~2 points: a band widened by about one SD;
    the slow test holds 90-98% with 400 runs)."""
    got = coverage(World(d=8, n=200, n_ref=300, shift=0.3, scale=1.2), reps=120)
    for m, (hit, ratio) in got.items():
        assert 0.87 <= hit <= 0.99 and 0.75 < ratio < 1.3, (m, hit, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("world", SLOW_WORLDS, ids=SLOW_WORLD_IDS)
def test_coverage_new_metrics(world):
    got = coverage(world, reps=400)
    print(world, "(coverage, mean SE / SD):", got)
    for m, (hit, ratio) in got.items():
        assert 0.90 <= hit <= 0.98, (m, hit, ratio)


def paired_coverage(world: World, reps: int, independent: float, seed: int = 11) -> dict:
    ref = world.reference()
    rng = np.random.default_rng(seed)
    runs = [
        paired_differences(*paired_draw(world, rng, 0.35, 1.25, independent), ref, names=NEW, options=Options())
        for _ in range(reps)
    ]
    out = {}
    for m in NEW:
        diffs = np.array([r[m]["difference"] for r in runs])
        hit = np.mean([r[m]["ci_low"] <= diffs.mean() <= r[m]["ci_high"] for r in runs])
        out[m] = (hit, np.mean([r[m]["se"] for r in runs]) / diffs.std(ddof=1))
    return out


def test_paired_differences_of_new_metrics_fast():
    got = paired_coverage(World(d=8, n=150, n_ref=300, shift=0.3, scale=1.2), reps=60, independent=0.02)
    for m, (hit, ratio) in got.items():
        assert 0.85 <= hit <= 1.0 and 0.65 < ratio < 1.4, (m, hit, ratio)


@pytest.mark.slow
def test_paired_differences_of_new_metrics():
    got = paired_coverage(World(d=16, n=400, shift=0.3, scale=1.2), reps=400, independent=0.2)
    print("paired d16n400 (coverage, mean SE / SD):", got)
    for m, (hit, ratio) in got.items():
        assert 0.90 <= hit <= 0.98, (m, hit, ratio)


def test_paired_difference_of_identical_settings_is_zero_for_new_metrics():
    w = World(d=8, n=120, n_ref=200)
    a = w.draw(np.random.default_rng(3))
    out = paired_differences(a, a, w.reference(), names=NEW)
    for m in NEW:
        assert out[m]["difference"] == 0 and out[m]["se"] == 0 and not out[m]["distinguishable"]
    _, psis = evaluate(a, w.reference(), NEW, influence=True)
    assert set(psis) == set(NEW)


# ---------------------------------------------------------------- report, Table 2, regression gate
def test_table2_optional_columns_and_the_regression_gate_know_the_new_metrics():
    import pandas as pd

    from glide_eval.regress.compare import judge, parse_tolerances
    from reports.table2 import table2, to_latex, to_markdown

    row = {"setting": "cfg-1.5", "family": "cfg", "scale": 1.5, "fid": 12.2449, "captions_source": "coco"}
    row.update(fd_dinov2=301.26, fd_dinov2_ci_low=300.26, fd_dinov2_ci_high=302.26, cmmd=0.6512, coverage=0.81)
    t = table2(pd.DataFrame([row]))
    assert list(t.columns[-3:]) == ["fd_dinov2_display", "cmmd_display", "coverage_display"]
    assert t["fd_dinov2_display"].iloc[-1] == "301.26 ± 1.00" and t["fd_dinov2_display"].iloc[0] == ""
    md = to_markdown(t)
    assert "| Model | FID | Zero-shot FID | fd_dinov2 | cmmd | coverage | Source | Protocol |" in md
    assert "| 12.24 | 301.26 ± 1.00 | 0.65 | 0.81 | this run |" in md
    assert r"fd\_dinov2 & cmmd & coverage & Source" in to_latex(t)
    assert "fd_dinov2_display" not in table2(pd.DataFrame([{k: row[k] for k in ("setting", "fid")}])).columns

    reps = np.zeros(10)
    reps[:5] = 1.0
    assert judge("cmmd", 0.5, 3.5, reps, 2.0, (0.0, False))["verdict"] == "regression"  # lower is better
    assert judge("coverage", 0.9, 0.1, reps * 0.01, 2.0, (0.0, False))["verdict"] == "regression"
    assert judge("density", 0.5, 0.9, reps * 0.01, 2.0, (0.0, False))["verdict"] == "better"
    assert parse_tolerances(["fd_dinov2=5", "cmmd=2%"]) == {"fd_dinov2": (5.0, False), "cmmd": (2.0, True)}
