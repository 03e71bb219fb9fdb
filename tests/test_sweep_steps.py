"""The sampling-steps axis: [grid] steps settings carry their own sampler into the generator,
the shard keys and results.parquet; resume; the steps figure in the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import test_sweep_fakes as fakes
from test_sweep import METRICS, write_config
from glide_eval.config import ConfigError, Setting, load_config
from glide_eval.sweep import SweepError, make_plan, model_evaluations, run_sweep
from reports.build import build_report

STEPS = '\n[grid]\nsteps = ["20", "5"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "cfg:2.0"\n'


def steps_config(tmp_path, name="cfg.toml", grid=STEPS, **kw):
    path = write_config(tmp_path, name, **kw)
    # replace the [grid] table of write_config by one with the steps keys
    text = path.read_text().replace("[grid]\nunguided = true\ncfg = [1.0, 3.0]\nclip = [2.0]\n",
                                    "")
    path.write_text(text.replace("[engine_options]", grid.strip() + "\nunguided = true\ncfg = [2.0]\n"
                                 "[engine_options]"))
    return path


def test_steps_settings_and_validation(tmp_path):
    config = load_config(steps_config(tmp_path))
    names = [s.name for s in config.settings]
    assert names == ["unguided", "cfg-2", "steps-ancestral-20", "steps-ancestral-5",
                     "steps-ddim-20", "steps-ddim-5"]
    ddim5 = config.settings[-1]
    assert ddim5 == Setting("steps", 2.0, "ddim", "5", "cfg")
    assert ddim5.guidance == ("cfg", 2.0) and ddim5.sampler(config) == ("ddim", "5")
    # other settings use [sampler]; per-sample evaluations follow the setting's own steps
    assert config.settings[1].sampler(config) == ("ancestral", "250")
    assert model_evaluations(config, ddim5)["base"] == 2 * 5
    unguided = load_config(steps_config(tmp_path, "u.toml", grid=STEPS.replace('"cfg:2.0"', '"unguided"')))
    assert unguided.settings[-1].guidance == ("none", 0.0)
    assert model_evaluations(unguided, unguided.settings[-1])["base"] == 5
    # a config without steps keeps the hash it had before the steps keys existed
    plain = load_config(write_config(tmp_path, "plain.toml"))
    assert "steps" not in plain.hashed_data()["grid"]
    assert "steps" in config.hashed_data()["grid"]
    text = steps_config(tmp_path, "bad.toml").read_text()
    for bad, key in [
        (text.replace('steps = ["20", "5"]', 'steps = ["20", "fast"]'), "grid.steps"),
        (text.replace('steps = ["20", "5"]', 'steps = ["20", "20"]'), "grid.steps"),
        (text.replace('steps = ["20", "5"]', 'steps = [20.5]'), "grid.steps"),
        (text.replace('["ancestral", "ddim"]', '["ancestral", "plms"]'), "grid.steps_methods"),
        (text.replace('["ancestral", "ddim"]', '[]'), "grid.steps_methods"),
        (text.replace('"cfg:2.0"', '"clip:2.0"'), "grid.steps_guidance"),
        (text.replace('"cfg:2.0"', '"cfg:x"'), "grid.steps_guidance"),
        (text.replace('steps_guidance = "cfg:2.0"', "steps_guidance = 2.0"), "grid.steps_guidance"),
    ]:
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(ConfigError, match=rf"bad\.toml: \[{key.replace('.', '[.]')}\]"):
            load_config(tmp_path / "bad.toml")
    # integers are accepted as respacings
    (tmp_path / "int.toml").write_text(text.replace('steps = ["20", "5"]', "steps = [20, 5]"))
    assert load_config(tmp_path / "int.toml").data["grid"]["steps"] == ["20", "5"]


def test_steps_sweep_uses_each_settings_sampler_and_resumes(tmp_path):
    config = load_config(steps_config(tmp_path))
    summary = run_sweep(config, progress=False, log=lambda m: None)
    assert summary["shards_run"] == 6 * 4
    run_dir = config.output_dir
    captions = json.loads((run_dir / "captions.json").read_text())
    df = pd.read_parquet(run_dir / "results.parquet")
    steps = df[df["family"] == "steps"]
    assert list(steps["setting"]) == ["steps-ancestral-20", "steps-ancestral-5", "steps-ddim-20", "steps-ddim-5"]
    assert list(steps["method"]) == ["ancestral", "ancestral", "ddim", "ddim"]
    assert list(steps["base_respacing"]) == ["20", "5", "20", "5"]
    assert set(df[df["family"] != "steps"]["base_respacing"]) == {"250"}
    for _, row in steps.iterrows():
        images = np.stack([fakes.fake_image(7, i, c, "cfg", 2.0, 8, method=row["method"],
                                            steps=int(row["base_respacing"])) for i, c in enumerate(captions)])
        expected = fakes.compute_metrics(fakes.featurize(images, captions), captions, False)
        for m in METRICS:
            assert row[m] == pytest.approx(expected[m], rel=1e-12), (row["setting"], m)
    # the fake's FID falls with more steps, and the two methods differ
    fid = steps.set_index("setting")["fid"]
    assert fid["steps-ancestral-20"] < fid["steps-ancestral-5"] and fid["steps-ddim-20"] < fid["steps-ddim-5"]
    assert fid["steps-ancestral-5"] != fid["steps-ddim-5"]
    # resume: nothing to redo
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0
    # another steps list needs --force; only the new respacing is sampled, the rest reused
    changed = load_config(steps_config(tmp_path, "more.toml", grid=STEPS.replace('["20", "5"]', '["20", "5", "2"]')))
    with pytest.raises(SweepError, match="grid.steps"):
        run_sweep(changed, progress=False, log=lambda m: None)
    assert run_sweep(changed, force=True, progress=False, log=lambda m: None)["shards_run"] == 2 * 4
    # a steps setting's shards are keyed by its guidance too: unguided ones are sampled anew
    unguided = load_config(steps_config(tmp_path, "ung.toml", grid=STEPS.replace('"cfg:2.0"', '"unguided"')))
    assert run_sweep(unguided, force=True, progress=False, log=lambda m: None)["shards_run"] == 4 * 4
    assert len(make_plan(unguided).settings) == 6

    out = build_report(run_dir)
    assert out["steps_png"].is_file() and out["steps_pdf"].is_file()
    html = out["html"].read_text()
    assert "Sampling steps" in html and 'alt="FID vs sampling steps"' in html
    pareto = pd.read_csv(out["pareto_csv"])
    assert not pareto.empty and "steps" not in set(pareto["family"])


def test_a_steps_setting_sampling_like_another_shares_its_shards(tmp_path):
    """steps-ancestral-250 at cfg:2 samples exactly like cfg-2 ([sampler] ancestral, 250): it is
    measured on cfg-2's shards, and its row says so."""
    config = load_config(steps_config(tmp_path, grid=STEPS.replace('["20", "5"]', '["250", "5"]')))
    plan = make_plan(config)
    assert plan.sources["steps-ancestral-250"].name == "cfg-2"
    assert plan.sources["steps-ddim-250"].name == "steps-ddim-250"
    assert {s.name for s, _ in plan.units} == {"unguided", "cfg-2", "steps-ancestral-5", "steps-ddim-250",
                                              "steps-ddim-5"}
    summary = run_sweep(config, progress=False, log=lambda m: None)
    assert summary["shards_run"] == 5 * 4
    assert not (config.output_dir / "shards" / "steps-ancestral-250").exists()
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    assert df.loc["steps-ancestral-250", "samples_from"] == "cfg-2"
    assert df.loc["cfg-2", "samples_from"] == "cfg-2"
    for m in METRICS:
        assert df.loc["steps-ancestral-250", m] == df.loc["cfg-2", m]
    assert df.loc["steps-ancestral-250", "base_respacing"] == "250"
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0


def test_clip_method_samples_the_clip_settings_with_their_own_method(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("clip = [2.0]\n", 'clip = [2.0]\nclip_method = "ddim"\n'))
    config = load_config(path)
    clip = config.settings[-1]
    assert clip == Setting("clip", 2.0, "ddim") and clip.name == "clip-2"
    assert clip.sampler(config) == ("ddim", "250") and config.settings[1].sampler(config) == ("ancestral", "250")
    run_sweep(config, progress=False, log=lambda m: None)
    captions = json.loads((config.output_dir / "captions.json").read_text())
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    assert df.loc["clip-2", "method"] == "ddim" and df.loc["cfg-3", "method"] == "ancestral"
    images = np.stack([fakes.fake_image(7, i, c, "clip", 2.0, 8, method="ddim", steps=250)
                       for i, c in enumerate(captions)])
    expected = fakes.compute_metrics(fakes.featurize(images, captions), captions, False)
    for m in METRICS:
        assert df.loc["clip-2", m] == pytest.approx(expected[m], rel=1e-12), m
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0
    # naming [sampler]'s own method changes nothing: same settings, same hash as without the key
    same = path.read_text().replace('clip_method = "ddim"', 'clip_method = "ancestral"')
    (tmp_path / "same.toml").write_text(same)
    plain = load_config(write_config(tmp_path, "plain.toml"))
    assert load_config(tmp_path / "same.toml").settings == plain.settings
    assert load_config(tmp_path / "same.toml").config_hash == plain.config_hash != config.config_hash
    (tmp_path / "bad.toml").write_text(path.read_text().replace('"ddim"', '"plms"'))
    with pytest.raises(ConfigError, match=r"bad\.toml: \[grid[.]clip_method\].*plms"):
        load_config(tmp_path / "bad.toml")
