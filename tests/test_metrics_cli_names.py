"""`glide-eval metrics --names ... --ci` (and --bootstrap kept as an alias of --ci), against
`metrics.calculate_metrics` on the same saved features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from glide_eval.cli import main
from metrics import FeatureAccumulator, calculate_metrics


def saved(tmp_path, name: str, pool: np.ndarray) -> tuple[str, FeatureAccumulator]:
    acc = FeatureAccumulator(meta={"extractor": "gauss", "extractor_sha256": "0" * 64})
    acc.add_features(pool, None, None, 0)
    acc.save(tmp_path / name)
    return str(tmp_path / name), FeatureAccumulator.load(tmp_path / name)


def run(*args) -> dict:
    result = CliRunner().invoke(main, ["metrics", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(3)
    gen = saved(tmp_path, "gen.npz", rng.normal(0.2, 1.0, size=(120, 5)))
    ref = saved(tmp_path, "ref.npz", rng.normal(0.0, 1.0, size=(150, 5)))
    return gen, ref


def test_names_and_ci_equal_calculate_metrics(inputs):
    (gen, gen_acc), (ref, ref_acc) = inputs
    got = run("--gen", gen, "--ref", ref, "--names", "fid,kid,fid_infinity,precision", "--ci", "--seed", "4")
    expected = calculate_metrics(gen_acc, ref_acc, names=["fid", "kid", "fid_infinity", "precision"], ci=True, seed=4)
    for key in (
        "fid",
        "fid_ci_low",
        "fid_ci_high",
        "kid",
        "kid_se",
        "fid_infinity",
        "fid_infinity_ci_high",
        "precision",
        "recall",
        "recall_ci_low",
    ):
        assert got[key] == pytest.approx(expected[key], rel=1e-9), key
    assert "is" not in got and got["provenance"]["ci"] is True
    plain = run("--gen", gen, "--ref", ref, "--names", "kid")
    assert plain["kid"] == pytest.approx(expected["kid"]) and "kid_ci_low" not in plain


def test_bootstrap_is_an_alias_of_ci(inputs):
    (gen, _), (ref, _) = inputs
    with_ci = run("--gen", gen, "--ref", ref, "--fid", "--ci")
    alias = run("--gen", gen, "--ref", ref, "--fid", "--bootstrap", "50")
    assert {k: v for k, v in alias.items() if k != "provenance"} == {
        k: v for k, v in with_ci.items() if k != "provenance"
    }
    assert "fid_ci_low" in alias


def test_bad_names_are_usage_errors(inputs):
    (gen, _), (ref, _) = inputs
    result = CliRunner().invoke(main, ["metrics", "--gen", gen, "--ref", ref, "--names", "fid,fld"])
    assert result.exit_code == 2 and "unknown metric(s) ['fld']" in result.output and "fid_infinity" in result.output
    result = CliRunner().invoke(main, ["metrics", "--gen", gen, "--names", "kid"])
    assert result.exit_code == 2 and "kid need(s) --ref" in result.output
    result = CliRunner().invoke(main, ["metrics", "--gen", gen, "--ref", ref, "--names", "fid", "--fid"])
    assert result.exit_code == 2 and "--names replaces" in result.output
