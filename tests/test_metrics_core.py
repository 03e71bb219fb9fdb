"""Metric maths: closed forms, and equality with torch-fidelity's own metric functions."""

import numpy as np
import pytest
import torch

import torchvision_compat  # noqa: F401  (conftest.py calls ensure_torchvision() first)
from metrics import CorruptFileError, FeatureAccumulator, FeatureError, ReferenceStats, calculate_metrics
from metrics.fid import StatisticsError, frechet_distance, gaussian_statistics
from metrics.inception_score import inception_score
from metrics.prc import knn_radii, precision_recall, precision_recall_hits
from metrics.reference import reference_from_accumulator


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d)) * scale
    return a @ a.T / d + np.eye(d) * 1e-3


# ---------------------------------------------------------------- FID
def test_fid_closed_form_diagonal_and_commuting():
    rng = np.random.default_rng(0)
    d = 16
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # commuting: same eigenvectors
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-10)


def test_fid_matches_torch_fidelity_formula():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(1)
    d = 64
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, 2.0)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    theirs = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)


def test_fid_guards():
    with pytest.raises(StatisticsError, match="at least 2"):
        gaussian_statistics(np.zeros((1, 4)))
    with pytest.raises(StatisticsError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    # rank-deficient covariances (N < D): no square roots of rounding noise
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 120)), rng.normal(0.5, 2.0, size=(9, 120))
    mu, s = gaussian_statistics(x)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9
    x1, x2 = x - x.mean(0), y - y.mean(0)  # exact: tr sqrt(S1 S2) = sum of singular values of X1 X2^T / ...
    tr = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(6 * 8)
    d = x.mean(0) - y.mean(0)
    exact = d @ d + (x1**2).sum() / 6 + (x2**2).sum() / 8 - 2 * tr
    assert frechet_distance(mu, s, *gaussian_statistics(y)) == pytest.approx(exact, rel=1e-11)


# ---------------------------------------------------------------- IS
def test_inception_score_closed_forms():
    k, m = 7, 30
    confident = torch.full((k * m, k), -100.0, dtype=torch.float64)
    confident[torch.arange(k * m), torch.arange(k * m) % k] = 100.0
    assert inception_score(confident, splits=1)[0] == pytest.approx(k, rel=1e-12)
    assert inception_score(confident.numpy(), splits=m, convention="guided-diffusion", split_size=k)[
        0
    ] == pytest.approx(k, rel=1e-12)
    assert inception_score(np.zeros((50, 10)), splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_inception_score_matches_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(503, 1008) * 3
    theirs = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    mean, std = inception_score(logits.numpy(), splits=10)
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(theirs["inception_score_std"], rel=1e-9)
    with pytest.raises(ValueError, match="at least 10"):
        inception_score(np.zeros((5, 3)))


# ---------------------------------------------------------------- precision / recall
def test_prc_closed_forms():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)
    # nested 1-D grids: real = 0..99, generated = 0.25 + 0..49; k = 3
    real = np.zeros((100, 2), np.float32)
    real[:, 0] = np.arange(100)
    gen = np.zeros((50, 2), np.float32)
    gen[:, 0] = np.arange(50) + 0.25
    # every generated point is 0.25 from a real one (real radii >= 2): precision 1;
    # generated balls (radius 2, 3 at the ends) cover the real integers 0..52: recall 53/100
    assert precision_recall(gen, real) == (1.0, 0.53)
    assert knn_radii(real)[[0, 1, 50, 99]].tolist() == pytest.approx([3, 2, 2, 3], abs=1e-3)


@pytest.mark.parametrize("batch", [10000, 64])
def test_prc_identical_to_torch_fidelity(batch):
    from torch_fidelity.metric_prc import calculate_precision_recall_full, calculate_precision_recall_part

    rng = np.random.default_rng(4)
    # small integer features: many exactly tied distances, so '<=' and rounding must agree
    gen = torch.from_numpy(rng.integers(0, 3, size=(300, 48)).astype(np.float32))
    real = torch.from_numpy(rng.integers(0, 3, size=(260, 48)).astype(np.float32) + (rng.random((260, 48)) < 0.05))
    p_full, r_full = calculate_precision_recall_full(gen, real, 3, batch)
    gen_hit, real_hit = precision_recall_hits(gen, real, batch_size=batch)
    assert 0 < gen_hit.mean() < 1 and 0 < real_hit.mean() < 1
    assert round(p_full * len(gen)) == gen_hit.sum() and round(r_full * len(real)) == real_hit.sum()
    assert gen_hit.mean() == pytest.approx(p_full, abs=1e-6) and real_hit.mean() == pytest.approx(r_full, abs=1e-6)
    # same per-sample decisions as torch-fidelity's distances
    radii_real = torch.cdist(real, real).kthvalue(4).values
    assert torch.equal(knn_radii(real, batch_size=batch), radii_real) if batch == 10000 else True
    expected_gen_hit = (torch.cdist(real, gen) <= radii_real[:, None]).any(dim=0).numpy()
    np.testing.assert_array_equal(gen_hit, expected_gen_hit)
    # continuous features, cached reference radii
    gen, real = torch.randn(200, 32), torch.randn(180, 32) * 1.2
    p_part, r_part = calculate_precision_recall_part(gen, real, 3, batch)
    p, r = precision_recall(gen, real, real_radii=knn_radii(real, batch_size=batch), batch_size=batch)
    assert (p, r) == pytest.approx((p_part, r_part), abs=1e-6)


# ---------------------------------------------------------------- accumulator and calculate_metrics
def test_accumulator_shards_merge_and_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    pool = rng.normal(3, 2, size=(90, 12)).astype(np.float32)
    logits = rng.normal(size=(90, 5)).astype(np.float32)
    clip = rng.normal(25, 3, size=90)
    whole = FeatureAccumulator()
    whole.add_features(pool, logits, clip)
    paths = []
    for i, (lo, hi) in enumerate([(0, 17), (17, 60), (60, 90)]):
        shard = FeatureAccumulator(meta={"extractor": "x"})
        shard.add_features(pool[lo:hi], logits[lo:hi], clip[lo:hi], n_truncated=i)
        shard.save(tmp_path / f"s{i}.npz")
        paths.append(tmp_path / f"s{i}.npz")
    merged = FeatureAccumulator.merged(paths)
    assert merged.n == 90 and merged.n_truncated == 3 and merged.meta["extractor"] == "x"
    np.testing.assert_array_equal(merged.pool, pool)
    np.testing.assert_array_equal(merged.logits, logits)
    mu, sigma = merged.statistics()
    np.testing.assert_allclose(mu, pool.astype(np.float64).mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(pool.astype(np.float64), rowvar=False), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(whole.statistics()[1], sigma, rtol=1e-11, atol=1e-13)
    other = FeatureAccumulator(meta={"extractor": "y"})
    with pytest.raises(FeatureError, match="different extractor"):
        merged.merge(other)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="bad.npz"):  # storage's unreadable-file error
        FeatureAccumulator.load(tmp_path / "bad.npz")


def test_nan_rows_counted_never_averaged():
    pool = np.ones((6, 4), np.float32) * np.arange(6, dtype=np.float32)[:, None]
    pool[2, 1] = np.nan
    acc = FeatureAccumulator()
    acc.add_features(pool, np.zeros((6, 3)))
    assert acc.n == 5 and acc.n_nan == 1
    assert acc.statistics()[0][0] == pytest.approx(np.mean([0, 1, 3, 4, 5]))
    ref = FeatureAccumulator()
    ref.add_features(pool[[0, 1, 3, 4, 5]])
    with pytest.raises(FeatureError, match="1 of 6 samples have NaN"):
        calculate_metrics(acc, ref, isc=False, prc=False)
    assert calculate_metrics(acc, ref, isc=False, prc=False, allow_nan=True)["fid"] == pytest.approx(0, abs=1e-9)


def test_calculate_metrics_against_direct_formulas(tmp_path):
    rng = np.random.default_rng(6)
    gen = {
        "pool": rng.normal(0, 1, (120, 16)),
        "logits_unbiased": rng.normal(size=(120, 10)),
        "clip_scores": rng.normal(30, 2, 120),
        "n_truncated": 4,
    }
    ref_acc = FeatureAccumulator(meta={"extractor": None})
    ref_acc.add_features(rng.normal(0.3, 1.1, (150, 16)))
    ref = reference_from_accumulator(ref_acc, {"resolution": 64})
    ref.save(tmp_path / "ref.npz")
    ref = ReferenceStats.load(tmp_path / "ref.npz")
    out = calculate_metrics(gen, ref, clip_score=True, bootstrap=20, seed=1)
    mu_g, s_g = gaussian_statistics(gen["pool"])
    mu_r, s_r = gaussian_statistics(ref_acc.pool)
    assert out["fid"] == pytest.approx(frechet_distance(mu_g, s_g, mu_r, s_r), rel=1e-9)
    assert out["is"] == pytest.approx(inception_score(gen["logits_unbiased"].astype(np.float32))[0], rel=1e-12)
    assert (out["precision"], out["recall"]) == precision_recall(gen["pool"], ref_acc.pool)
    assert out["clip_score"] == pytest.approx(gen["clip_scores"].mean()) and out["clip_truncated"] == 4
    for m in ("fid", "is", "precision", "recall", "clip_score"):
        assert out[f"{m}_ci_low"] <= out[f"{m}_ci_high"]
    assert out["clip_score_ci_low"] < out["clip_score"] < out["clip_score_ci_high"]
    again = calculate_metrics(gen, ref, clip_score=True, bootstrap=20, seed=1)
    assert again == out  # seeded
    with pytest.raises(FeatureError, match="feature dims differ"):
        calculate_metrics({"pool": rng.normal(size=(20, 8))}, ref, isc=False)


@pytest.mark.parametrize("kind", ["integer", "duplicates", "continuous"])
def test_knn_radii_bit_identical_to_full_matrix(kind):
    """Streamed blocks (running k smallest) == kthvalue over torch-fidelity's full cdist matrix."""
    g = torch.Generator().manual_seed(7)
    if kind == "integer":  # many exact ties
        x = torch.randint(0, 3, (333, 40), generator=g).float()
    elif kind == "duplicates":  # 20 copies of each point
        x = torch.randn(17, 40, generator=g).repeat(20, 1)
    else:
        x = torch.randn(333, 2048, generator=g).relu()
    expected = torch.cat([torch.cat([torch.cdist(a, b) for b in x.split(100)], 1) for a in x.split(100)])
    assert torch.equal(knn_radii(x, batch_size=100), expected.kthvalue(4, dim=1).values)
    assert torch.equal(knn_radii(x), torch.cdist(x, x).kthvalue(4, dim=1).values)
