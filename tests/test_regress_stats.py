"""The paired bootstrap (metrics.paired_bootstrap) against closed forms, and the regress decision rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from glide_eval.regress.baseline import RegressError, aligned_n
from glide_eval.regress.compare import judge, parse_tolerances, verdict
from metrics.normal import normal_z
from metrics.paired_bootstrap import normal_interval, paired_bootstrap


def mean_of_x(arrays):
    return {"m": float(arrays["x"].mean())}


def test_paired_bootstrap_se_of_a_mean_matches_the_closed_form():
    rng = np.random.default_rng(0)
    n = 400
    shared = rng.normal(0, 3.0, n)  # per-sample variation common to both sides (same caption, same noise)
    base = {"x": shared + rng.normal(0, 0.2, n)}
    cand = {"x": shared + 0.05 + rng.normal(0, 0.2, n)}
    reps = paired_bootstrap(mean_of_x, base, cand, rounds=4000, seed=1)["m"]
    d = cand["x"] - base["x"]
    # bootstrap variance of a resampled mean of the differences = population variance / n
    closed = np.std(d, ddof=0) / np.sqrt(n)
    assert np.std(reps, ddof=1) == pytest.approx(closed, rel=0.05)
    assert reps.mean() == pytest.approx(d.mean(), abs=5 * closed / np.sqrt(4000))  # centred on the mean diff
    # two independent bootstraps would see the shared variation: ~15x wider here
    independent = np.sqrt(np.var(base["x"]) / n + np.var(cand["x"]) / n)
    assert independent > 10 * closed


def test_replicates_use_the_same_indices_on_both_sides():
    rng = np.random.default_rng(3)
    base = {"x": rng.normal(size=50), "y": rng.normal(size=(50, 2))}
    cand = {"x": rng.normal(size=50), "y": rng.normal(size=(50, 2))}

    def stat(a):
        return {"s": float(np.std(a["x"]) * a["y"][:, 1].max())}

    reps = paired_bootstrap(stat, base, cand, rounds=20, seed=7)["s"]
    draw = np.random.default_rng(7)
    for r in reps:
        idx = draw.integers(0, 50, size=50)
        assert r == stat({k: v[idx] for k, v in cand.items()})["s"] - stat({k: v[idx] for k, v in base.items()})["s"]
    same = paired_bootstrap(stat, base, base, rounds=10, seed=0)["s"]
    assert np.all(same == 0)


def test_paired_bootstrap_input_errors():
    with pytest.raises(ValueError, match="first dimension"):
        paired_bootstrap(mean_of_x, {"x": np.zeros(3)}, {"x": np.zeros(4)}, 2)
    with pytest.raises(ValueError, match="different arrays"):
        paired_bootstrap(mean_of_x, {"x": np.zeros(3)}, {"y": np.zeros(3)}, 2)


def test_normal_z_and_interval():
    assert normal_z(0.95) == pytest.approx(stats.norm.ppf(0.975), abs=1e-9)
    assert normal_z(0.95, 10) == pytest.approx(stats.norm.ppf(1 - 0.05 / 20), abs=1e-9)
    reps = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi, se = normal_interval(0.5, reps, 2.0)
    assert se == pytest.approx(np.std(reps, ddof=1)) and (lo, hi) == pytest.approx((0.5 - 2 * se, 0.5 + 2 * se))
    with pytest.raises(ValueError):
        normal_z(1.0)


def test_judge_is_direction_aware():
    reps = np.full(10, 0.0)
    reps[:5] = 1.0  # se = 0.527
    # FID up by 3 (worse), IS down by 3 (worse): both regressions at tolerance 0
    fid = judge("fid", 10.0, 13.0, reps, 2.0, (0.0, False))
    isc = judge("is", 13.0, 10.0, reps, 2.0, (0.0, False))
    for row in (fid, isc):
        assert row["worsening"] == 3.0 and row["verdict"] == "regression"
        assert row["worsening_low"] == pytest.approx(3.0 - 2.0 * np.std(reps, ddof=1))
    assert judge("fid", 13.0, 10.0, reps, 2.0, (0.0, False))["verdict"] == "better"
    assert judge("precision", 0.5, 0.8, reps, 2.0, (0.0, False))["verdict"] == "ok"  # better, not significant
    # tolerance: absolute, or percent of the baseline value
    assert judge("fid", 10.0, 13.0, reps, 2.0, (2.5, False))["verdict"] == "possible regression"
    assert judge("fid", 10.0, 13.0, reps, 2.0, (50.0, True))["tolerance"] == 5.0
    assert judge("fid", 10.0, 13.0, reps, 2.0, (50.0, True))["verdict"] == "ok"
    assert judge("fid", 10.0, 10.0, np.zeros(4), 2.0, (0.0, False))["verdict"] == "identical"


def test_verdict_boundaries():
    assert verdict(1.0, 0.5, 1.5, 0.25, 0.5) == "possible regression"  # low == tolerance is not beyond it
    assert verdict(1.0, 0.51, 1.5, 0.25, 0.5) == "regression"
    assert verdict(0.0, -0.1, 0.1, 0.05, 0.0) == "ok"


def test_aligned_n():
    # shards of 8, batches of 3: batches [0,3) [3,6) [6,8) [8,11) [11,14) [14,16) [16,19) ...
    assert [aligned_n(n, 20, 8, 3) for n in (1, 3, 4, 7, 8, 9, 15, 19, 20)] == [3, 3, 6, 8, 8, 11, 16, 19, 20]
    assert aligned_n(18, 18, 8, 3) == 18


def test_parse_tolerances():
    assert parse_tolerances(["fid=0.5", "precision = 2%", "nan_count=3"]) == {
        "fid": (0.5, False),
        "precision": (2.0, True),
        "nan_count": (3.0, False),
    }
    for bad, msg in [
        ("fid", "expected METRIC=VALUE"),
        ("fdi=1", "unknown metric"),
        ("fid=-1", ">= 0"),
        ("fid=1..2", "not a number"),
    ]:
        with pytest.raises(RegressError, match=msg):
            parse_tolerances([bad])
