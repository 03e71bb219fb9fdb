"""Issue 20/21 wiring in the sweep: KID / FID-infinity in [metrics] names, intervals by default,
RUN_DIR/differences.csv (paired differences, recorded in the manifest), metrics-only config
changes merged again from the shards, and the steps reference.

The engine (`make_components` below, used as `python:test_sweep_differences:make_components`)
samples test_sweep_fakes' images and measures them with the real `metrics` functions against
fixed Gaussian reference features, so every number here is checked against `metrics` itself.
"""

from __future__ import annotations

import json
import re
import weakref

import numpy as np
import pandas as pd
import pytest
import test_sweep_fakes as fakes
from test_sweep import write_config

from glide_eval.sweep.components import Components
from glide_eval.sweep.config import ConfigError, load_config, steps_reference
from glide_eval.sweep.differences import measure_differences, metric_keys
from glide_eval.sweep.plan import make_plan
from glide_eval.sweep.run import run_sweep
from glide_eval.sweep.rundir import FEATURE_PREFIX, RunDir, generation_hash
from metrics import calculate_metrics, paired_differences
from metrics.calculate import Options

REF = {"pool": np.random.default_rng(5).normal(0.5, 0.15, size=(64, 6))}


def make_components(config, device: str) -> Components:
    base = fakes.make_components(config, device)
    names = list(config.metrics.names)

    def compute_metrics(features, captions, ci):
        return calculate_metrics({"pool": features["pool"]}, REF, names=names, ci=ci, seed=config.run.seed)

    def compute_differences(a, b, comparisons):
        return paired_differences(
            {"pool": a["pool"]},
            {"pool": b["pool"]},
            REF,
            names,
            comparisons=comparisons,
            options=Options(fid_infinity_seed=config.run.seed),
        )

    return Components(
        base.generate,
        base.featurize,
        compute_metrics,
        provenance=base.provenance,
        compute_differences=compute_differences,
    )


METRICS = '[metrics]\nnames = ["fid", "precision", "kid"]\nci = true\n'


def config_text(tmp_path, metrics=METRICS, steps="", n=16, cfg="[1.0, 3.0]", clip="[2.0, 4.0]"):
    path = write_config(tmp_path, n=n, shard_size=8, batch_size=8, cfg=cfg, clip=clip, extra=metrics)
    text = path.read_text().replace(
        "python:test_sweep_fakes:make_components", "python:test_sweep_differences:make_components"
    )
    if steps:
        text = text.replace("clip = " + clip, "clip = " + clip + "\n" + steps)
    path.write_text(text)
    return path


def shard_pool(run_dir, setting: str, n: int) -> np.ndarray:
    shards = sorted((run_dir / "shards" / setting).glob("*.npz"), key=lambda p: int(p.stem))
    pool = np.concatenate([RunDir(run_dir).load_shard(setting, int(p.stem))[FEATURE_PREFIX + "pool"] for p in shards])
    return pool[:n]


def test_differences_are_metrics_paired_differences_on_the_shards(tmp_path):
    config = load_config(config_text(tmp_path))
    run_sweep(config, progress=False, log=lambda m: None)
    out = config.output_dir
    results = pd.read_parquet(out / "results.parquet").set_index("setting")
    for column in ("kid", "kid_ci_low", "fid_ci_high", "recall_se"):
        assert column in results.columns
    diffs = pd.read_csv(out / "differences.csv")
    pairs = list(dict.fromkeys(zip(diffs["setting_a"], diffs["setting_b"], diffs["kind"])))
    assert [p for p in pairs if p[2] == "adjacent"] == [
        ("cfg-1", "cfg-3", "adjacent"),
        ("clip-2", "clip-4", "adjacent"),
    ]
    assert {p[2] for p in pairs} == {"adjacent"}  # cross-family pairs match on clip_score, not measured here
    keys = metric_keys(config.metrics.names)
    assert keys == ["fid", "precision", "recall", "kid"]
    assert set(diffs["comparisons"]) == {len(pairs) * len(keys)}
    for a, b, _ in pairs:
        expected = paired_differences(
            {"pool": shard_pool(out, a, 16)},
            {"pool": shard_pool(out, b, 16)},
            REF,
            config.metrics.names,
            comparisons=len(pairs) * len(keys),
            options=Options(fid_infinity_seed=7),
        )
        got = diffs[(diffs["setting_a"] == a) & (diffs["setting_b"] == b)].set_index("metric")
        for metric, v in expected.items():
            for col in ("a", "b", "difference", "se", "ci_low", "ci_high"):
                assert got.loc[metric, col] == pytest.approx(v[col], rel=1e-9, abs=1e-12), (a, b, metric, col)
            # "a" and "b" are the settings' own results
            assert got.loc[metric, "a"] == pytest.approx(results.loc[a, metric], rel=1e-9)
            assert got.loc[metric, "b"] == pytest.approx(results.loc[b, metric], rel=1e-9)
    # recorded and verified like the other results
    manifest = json.loads((out / "manifest.json").read_text())
    assert "differences.csv" in manifest["files"]
    (out / "differences.csv").write_text("damaged\n")
    run_sweep(config, progress=False, log=lambda m: None)
    pd.testing.assert_frame_equal(pd.read_csv(out / "differences.csv"), diffs)


def test_metrics_only_change_merges_again_without_sampling(tmp_path):
    old = load_config(
        config_text(tmp_path, metrics='[metrics]\nnames = ["fid", "precision"]\nci = false\nbootstrap = 200\n')
    )  # an old config: bootstrap accepted
    run_sweep(old, progress=False, log=lambda m: None)
    shards = {p: p.stat().st_mtime_ns for p in (old.output_dir / "shards").glob("*/*.npz")}
    assert "fid_ci_low" not in pd.read_parquet(old.output_dir / "results.parquet").columns
    new = load_config(
        config_text(tmp_path, metrics='[metrics]\nnames = ["fid", "precision", "kid", "fid_infinity"]\nci = true\n')
    )
    assert new.config_hash != old.config_hash
    assert generation_hash(new, {}) == generation_hash(old, {})
    logs = []
    summary = run_sweep(new, progress=False, log=logs.append)
    assert summary["shards_run"] == 0
    assert any("only the metrics changed" in m for m in logs)
    assert any("the config changed since the last merge" in m for m in logs)
    assert {p: p.stat().st_mtime_ns for p in shards} == shards
    results = pd.read_parquet(new.output_dir / "results.parquet").set_index("setting")
    pool = shard_pool(new.output_dir, "cfg-3", 16)
    expected = calculate_metrics(
        {"pool": pool}, REF, names=["fid", "precision", "kid", "fid_infinity"], ci=True, seed=7
    )
    for key in ("fid", "fid_ci_low", "kid", "kid_ci_high", "fid_infinity", "fid_infinity_se", "recall"):
        assert results.loc["cfg-3", key] == pytest.approx(expected[key], rel=1e-9)
    # a change of the samples is still refused
    other = load_config(config_text(tmp_path, cfg="[1.0, 5.0]"))
    with pytest.raises(Exception, match="grid.cfg"):
        run_sweep(other, progress=False, log=lambda m: None)


def test_config_metric_names_and_steps_reference(tmp_path):
    config = load_config(config_text(tmp_path, metrics='[metrics]\nnames = ["kid", "fid_infinity"]\n'))
    assert config.metrics.names == ["kid", "fid_infinity"]
    with pytest.raises(ConfigError, match=r"\[metrics.names\] unknown metric 'fld' \(known: .*kid, fid_infinity"):
        load_config(config_text(tmp_path, metrics='[metrics]\nnames = ["fld"]\n'))
    steps = 'steps = ["4", "2"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "unguided"\n'
    # [sampler]'s defaults are GLIDE's ancestral 250 steps: the unguided grid setting samples the reference
    assert steps_reference(load_config(config_text(tmp_path, steps=steps))) == "unguided"
    guided = steps.replace('"unguided"', '"cfg:2.0"')
    assert steps_reference(load_config(config_text(tmp_path, steps=guided))) is None  # no cfg-2 at 250 steps
    chosen = load_config(config_text(tmp_path, steps=steps + 'steps_reference = "ddim-4"\n'))
    assert steps_reference(chosen) == "steps-ddim-4"
    # a reference no other setting samples is sampled as a steps setting of its own (one, not one per method)
    own = load_config(config_text(tmp_path, steps=steps + 'steps_reference = "ddim-8"\n'))
    assert steps_reference(own) == "steps-ddim-8"
    assert [s.name for s in own.settings if s.family == "steps"] == [
        "steps-ancestral-4",
        "steps-ancestral-2",
        "steps-ddim-4",
        "steps-ddim-2",
        "steps-ddim-8",
    ]
    with pytest.raises(ConfigError, match=r"\[grid.steps_reference\] respacing '1' has 1 steps; sampler 'unipc'"):
        load_config(config_text(tmp_path, steps=steps + 'steps_reference = "unipc-1"\n'))
    with pytest.raises(ConfigError, match=r"\[grid.steps_reference\] must be \"METHOD-RESPACING\""):
        load_config(config_text(tmp_path, steps=steps + 'steps_reference = "heun-4"\n'))


def test_steps_settings_are_compared_with_the_reference(tmp_path):
    steps = (
        'steps = ["8", "4", "2"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "unguided"\n'
        'steps_n = 8\nsteps_reference = "ancestral-8"\n'
    )
    config = load_config(config_text(tmp_path, steps=steps))
    run_sweep(config, progress=False, log=lambda m: None)
    diffs = pd.read_csv(config.output_dir / "differences.csv")
    rows = diffs[diffs["kind"] == "steps-reference"]
    assert set(rows["setting_a"]) == {"steps-ancestral-8"}
    assert set(rows["setting_b"]) == {
        "steps-ancestral-4",
        "steps-ancestral-2",
        "steps-ddim-8",
        "steps-ddim-4",
        "steps-ddim-2",
    }
    assert set(rows["comparisons"]) == {1} and set(rows["n_samples"]) == {8}
    r = rows[(rows["setting_b"] == "steps-ddim-2") & (rows["metric"] == "fid")].iloc[0]
    expected = paired_differences(
        {"pool": shard_pool(config.output_dir, "steps-ancestral-8", 8)},
        {"pool": shard_pool(config.output_dir, "steps-ddim-2", 8)},
        REF,
        ["fid"],
    )["fid"]
    assert (r["difference"], r["ci_low"], r["ci_high"]) == pytest.approx(
        (expected["difference"], expected["ci_low"], expected["ci_high"]), rel=1e-9
    )


def test_shipped_configs_have_intervals_on():
    from pathlib import Path

    for name in ("default", "table2", "solvers"):
        config = load_config(Path(__file__).parent.parent / "glide_eval" / "configs" / f"{name}.toml")
        assert config.metrics.ci, name
        text = (Path(__file__).parent.parent / "glide_eval" / "configs" / f"{name}.toml").read_text()
        assert not re.search(r"^bootstrap\s*=", text, re.M), name  # the obsolete key


class Held(dict):
    """A setting's features as the test's loader hands them out (weakly referenceable)."""


def test_merge_streams_and_equals_the_merge_that_held_every_setting_exactly(tmp_path):
    """Issue 29: the merge reads one setting's features at a time, and each comparison's two
    settings when it comes to them; its results and differences.csv equal, bit for bit, those
    computed from every setting's features concatenated in memory at once (the merge before)."""
    steps = (
        'steps = ["8", "2"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "unguided"\n'
        'steps_n = 8\nsteps_reference = "ancestral-8"\n'
    )
    config = load_config(config_text(tmp_path, steps=steps, cfg="[1.0, 2.0, 3.0]"))
    run_sweep(config, progress=False, log=lambda m: None)
    out = config.output_dir
    components = make_components(config, "cpu")
    plan = make_plan(config)
    captions = json.loads((out / "captions.json").read_text())
    in_memory = {}
    for setting in plan.settings:
        shards = [RunDir(out).load_shard(s.setting.name, s.index) for s in plan.shards_for(setting)]
        in_memory[setting.name] = {
            k[len(FEATURE_PREFIX) :]: np.concatenate([s[k] for s in shards])
            for k in shards[0]
            if k.startswith(FEATURE_PREFIX)
        }
    results = pd.read_parquet(out / "results.parquet")
    for row in results.to_dict("records"):
        features = in_memory[row["setting"]]
        expected = components.compute_metrics(features, captions[: len(features["pool"])], True)
        assert {k: row[k] for k in expected} == expected, row["setting"]

    handed, most = [], [0]

    def load(name: str, n: int) -> dict:
        most[0] = max(most[0], sum(ref() is not None for ref in handed))
        held = Held({k: v[:n] for k, v in in_memory[name].items()})
        handed.append(weakref.ref(held))
        return held

    expected = measure_differences(config, components, results.to_dict("records"), load, lambda m: None)
    assert len(expected) > 20 and set(expected["kind"]) == {"adjacent", "steps-reference"}
    assert most[0] <= 1  # a load finds at most the one setting the next comparison shares
    got = pd.read_csv(out / "differences.csv")
    pd.testing.assert_frame_equal(got, expected.astype(got.dtypes.to_dict()), check_exact=True)


def test_a_new_steps_reference_is_sampled_on_resume_and_the_rest_merged_again(tmp_path):
    """Naming a steps_reference no setting samples, after a run: the sweep resumes without
    --force, samples the reference's shards alone and compares every steps setting with it."""
    steps = 'steps = ["4", "2"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "unguided"\nsteps_n = 8\n'
    first = load_config(config_text(tmp_path, steps=steps))
    run_sweep(first, progress=False, log=lambda m: None)
    again = load_config(config_text(tmp_path, steps=steps + 'steps_reference = "ddim-6"\n'))
    summary = run_sweep(again, progress=False, log=lambda m: None)
    assert summary["shards_run"] == 1  # steps-ddim-6's one shard of 8 samples
    diffs = pd.read_csv(again.output_dir / "differences.csv")
    rows = diffs[diffs["kind"] == "steps-reference"]
    assert set(rows["setting_a"]) == {"steps-ddim-6"}
    assert set(rows["setting_b"]) == {"steps-ancestral-4", "steps-ancestral-2", "steps-ddim-4", "steps-ddim-2"}
