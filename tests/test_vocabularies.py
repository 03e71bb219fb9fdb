"""One parser per vocabulary (issue 17): respacing strings, sampling methods, guidance specs and
metric names, each owned by the lowest package that uses it and used from above."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glide_eval.sweep.config import ConfigError, validate
from metrics import calculate_metrics, paired, register_metric
from metrics.calculate import METRICS, NAMES
from metrics.names import HIGHER_IS_BETTER, METRIC_NAMES, higher_is_better, register_direction
from reports import intervals
from reports.intervals import DIFFERENCE_COLUMNS, difference_table
from reports.pareto import pareto_mask
from samplers import sampling
from samplers.guidance_specs import parse_guidance, split_guidance
from samplers.schedules import count_steps, parse_respacing, space_timesteps

BASE = {"models": {"engine": "toy"}, "captions": {"source": "toy", "n": 8}, "grid": {"cfg": [1.0]}}


def _config(**sections):
    raw = {k: dict(v) for k, v in BASE.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate(raw)


@pytest.mark.parametrize("spec", ["250", "fast27", "ddim50", "10,10,5", "ddim25", "100,20,4"])
def test_count_steps_is_the_length_of_the_timesteps_the_sampler_keeps(spec):
    assert count_steps(spec) == len(space_timesteps(1000, spec))


@pytest.mark.parametrize("spec", ["", "0", "10,0", "ddim", "fast", "ten", "-5"])
def test_count_steps_refuses_what_has_no_positive_count(spec):
    with pytest.raises(ValueError):
        count_steps(spec)


def test_parse_respacing_kinds():
    assert parse_respacing(" 10,10,5 ") == ("sections", [10, 10, 5])
    assert parse_respacing("ddim50") == ("ddim", [50])
    assert parse_respacing("fast27") == ("fast27", [10, 10, 3, 2, 2])
    assert parse_respacing("") == ("all", [])


def test_config_respacing_errors_come_from_the_samplers_parser():
    with pytest.raises(ConfigError, match=r"\[sampler.base_respacing\].*respacing"):
        _config(sampler={"base_respacing": "ddimX"})
    assert _config(sampler={"base_respacing": "ddim50"}).sampler.base_respacing == "ddim50"


def test_sampling_methods_come_from_the_sampler_registry():
    with pytest.raises(ConfigError, match="sampler.method"):
        _config(sampler={"method": "heun"})
    # one registration adds a sampler everywhere: its options, fewest steps and cost come with it
    heun = sampling.SamplerRecord(
        "heun", sampling.sample_ddim, {"eta": 0.0}, min_steps=lambda options: 2, evaluations=lambda n: 2 * n - 1
    )
    sampling.register_sampler(heun)
    try:
        config = _config(
            sampler={"method": "heun"},
            grid={"clip": [2.0], "clip_method": "ancestral", "steps": ["10"], "steps_methods": ["heun", "ddim"]},
        )
        assert config.sampler.method == "heun"
        assert [s.name for s in config.settings if s.family == "steps"] == ["steps-heun-10", "steps-ddim-10"]
        assert sampling.check_sampler_options("heun", {"eta": 1}) == {"eta": 1}
        assert sampling.min_steps("heun") == 2 and sampling.model_evaluations("heun", 10) == 19
        with pytest.raises(
            ConfigError, match=r"\[grid.steps\] respacing '1' has 1 steps; sampler 'heun' needs at least 2"
        ):
            _config(grid={"steps": ["1"], "steps_methods": ["heun"]})
        # a name is registered once, unless replacing is asked for
        with pytest.raises(ValueError, match="sampler 'heun' is already registered; pass replace=True"):
            sampling.register_sampler(sampling.SamplerRecord("heun", sampling.sample_ancestral))
        sampling.register_sampler(sampling.SamplerRecord("heun", sampling.sample_ancestral), replace=True)
        assert sampling.get_sampler("heun") is sampling.sample_ancestral
        with pytest.raises(ValueError, match="lambda_min are grid options of every sampler"):
            sampling.register_sampler(sampling.SamplerRecord("grid", sampling.sample_ddim, {"lambda_min": 0.0}))
    finally:
        del sampling.SAMPLERS["heun"]


def test_guidance_specs_one_grammar():
    assert parse_guidance("cfg:3") == ("cfg", 3.0) and parse_guidance(" clip : 2.5 ") == ("clip", 2.5)
    assert parse_guidance("none") == ("none", 0.0) and parse_guidance("Unguided") == ("none", 0.0)
    assert parse_guidance(("cfg", 2)) == ("cfg", 2.0)
    for bad in ("foo:1", "cfg:abc", "cfg:inf", "a:b:1"):
        with pytest.raises(ValueError):
            parse_guidance(bad)
    assert split_guidance("dalle") is None and split_guidance("my-model:1e1") == ("my-model", 10.0)
    # the sweep config's steps_guidance goes through the same grammar
    assert _config(grid={"steps": ["5"], "steps_guidance": " cfg : 2 "}).settings[-1].guidance == ("cfg", 2.0)
    with pytest.raises(ConfigError, match="steps_guidance"):
        _config(grid={"steps": ["5"], "steps_guidance": "clip:2"})


def test_metric_names_and_directions_live_in_metrics():
    assert METRIC_NAMES == ("fid", "is", "precision", "recall", "clip_score")
    assert [higher_is_better(m) for m in METRIC_NAMES] == [False, True, True, True, True]
    with pytest.raises(ValueError, match="unknown metric"):
        higher_is_better("psnr")
    with pytest.raises(ConfigError, match="unknown metric 'psnr'"):
        _config(metrics={"names": ["fid", "psnr"]})
    # the Pareto fronts use the same directions: lower FID and higher precision are better
    fid, precision = [10.0, 12.0, 9.0], [0.5, 0.7, 0.4]
    assert pareto_mask(fid, precision, HIGHER_IS_BETTER["fid"], HIGHER_IS_BETTER["precision"]).tolist() == [
        True,
        True,
        True,
    ]
    assert pareto_mask([10.0, 12.0], [0.5, 0.4], False, True).tolist() == [True, False]
    # every metric calculate_metrics can report has its direction there, and only there
    assert set(NAMES) == set(HIGHER_IS_BETTER) and set(METRIC_NAMES) < set(NAMES)
    assert [higher_is_better(m) for m in ("kid", "fid_infinity")] == [False, False]
    assert intervals.HIGHER_IS_BETTER is HIGHER_IS_BETTER and paired.HIGHER_IS_BETTER is HIGHER_IS_BETTER


def test_a_registered_metric_brings_its_direction():
    pool = np.arange(12.0).reshape(4, 3)
    register_metric(
        "pool_mean",
        lambda g, r, o: ({"pool_mean": float(g.pool.mean())}, {}),
        False,
        ("pool_mean",),
        higher_is_better=True,
    )
    try:
        assert calculate_metrics({"pool": pool}, names=["pool_mean"])["pool_mean"] == pool.mean()
        assert higher_is_better("pool_mean") is True
        row = dict.fromkeys(DIFFERENCE_COLUMNS, 0.0)
        row.update(
            setting_a="a", setting_b="b", kind="adjacent", metric="pool_mean", difference=1.0, ci_low=0.5, ci_high=1.5
        )
        assert difference_table(pd.DataFrame([row]))["better"].tolist() == ["b"]  # higher is better: b
        for metric, higher in (("pool_mean", False), ("fid", True)):
            with pytest.raises(ValueError, match="already registered"):
                register_direction(metric, higher)
    finally:
        METRICS.pop("pool_mean")
        NAMES.pop("pool_mean")
        HIGHER_IS_BETTER.pop("pool_mean")
