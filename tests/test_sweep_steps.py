"""The sampling-steps axis: [grid] steps settings carry their own sampler into the generator,
the shard keys and results.parquet; resume; the steps figure in the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import test_sweep_fakes as fakes
from test_sweep import METRICS, write_config

from glide_eval.sweep.config import ConfigError, Setting, load_config
from glide_eval.sweep.describe import describe_plan
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.plan import make_plan, model_evaluations
from glide_eval.sweep.run import run_sweep
from reports.build import build_report

STEPS = '\n[grid]\nsteps = ["20", "5"]\nsteps_methods = ["ancestral", "ddim"]\nsteps_guidance = "cfg:2.0"\n'


def steps_config(tmp_path, name="cfg.toml", grid=STEPS, **kw):
    path = write_config(tmp_path, name, **kw)
    # replace the [grid] table of write_config by one with the steps keys
    text = path.read_text().replace("[grid]\nunguided = true\ncfg = [1.0, 3.0]\nclip = [2.0]\n", "")
    path.write_text(text.replace("[engine_options]", grid.strip() + "\nunguided = true\ncfg = [2.0]\n[engine_options]"))
    return path


def test_steps_settings_and_validation(tmp_path):
    config = load_config(steps_config(tmp_path))
    names = [s.name for s in config.settings]
    assert names == ["unguided", "cfg-2", "steps-ancestral-20", "steps-ancestral-5", "steps-ddim-20", "steps-ddim-5"]
    ddim5 = config.settings[-1]
    assert ddim5 == Setting("steps", 2.0, "ddim", "5", "cfg")
    assert ddim5.guidance == ("cfg", 2.0) and ddim5.sampling(config)[1:] == ("ddim", "5")
    # other settings use [sampler]; per-sample evaluations follow the setting's own steps
    assert config.settings[1].sampling(config)[1:] == ("ancestral", "250")
    assert model_evaluations(config, ddim5)["base"] == 2 * 5
    # PLMS's pseudo improved-Euler warm-up: one model call more than its 5 steps, doubled under cfg
    plms = load_config(steps_config(tmp_path, "plms.toml", grid=STEPS.replace('"ddim"]', '"plms"]')))
    assert model_evaluations(plms, plms.settings[-1]) == {"base": 2 * 6, "clip": 0, "upsampler": 0}
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
        (text.replace('steps = ["20", "5"]', "steps = [20.5]"), "grid.steps"),
        (text.replace('["ancestral", "ddim"]', '["ancestral", "heun"]'), "grid.steps_methods"),
        (text.replace('["ancestral", "ddim"]', "[]"), "grid.steps_methods"),
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
        images = np.stack(
            [
                fakes.fake_image(7, i, c, "cfg", 2.0, 8, method=row["method"], steps=int(row["base_respacing"]))
                for i, c in enumerate(captions)
            ]
        )
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
    assert {shard.setting.name for shard in plan.shards_to_sample} == {
        "unguided",
        "cfg-2",
        "steps-ancestral-5",
        "steps-ddim-250",
        "steps-ddim-5",
    }
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
    assert clip.sampling(config)[1:] == ("ddim", "250") and config.settings[1].sampling(config)[1:] == (
        "ancestral",
        "250",
    )
    run_sweep(config, progress=False, log=lambda m: None)
    captions = json.loads((config.output_dir / "captions.json").read_text())
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    assert df.loc["clip-2", "method"] == "ddim" and df.loc["cfg-3", "method"] == "ancestral"
    images = np.stack(
        [fakes.fake_image(7, i, c, "clip", 2.0, 8, method="ddim", steps=250) for i, c in enumerate(captions)]
    )
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
    (tmp_path / "bad.toml").write_text(path.read_text().replace('"ddim"', '"heun"'))
    with pytest.raises(ConfigError, match=r"bad\.toml: \[grid[.]clip_method\].*heun"):
        load_config(tmp_path / "bad.toml")


def test_steps_n_samples_the_steps_settings_on_the_first_captions_only(tmp_path):
    """[grid] steps_n = 8 of 14 captions (shards of 4): each steps setting samples the first two
    shards; steps-ancestral-250 shares cfg-2's samples and is measured on its first 8 of them."""
    grid = STEPS.replace('["20", "5"]', '["250", "5"]') + "steps_n = 8\n"
    config = load_config(steps_config(tmp_path, grid=grid))
    plan = make_plan(config)
    assert {s.name: plan.samples_of(s) for s in config.settings} == {
        "unguided": 14,
        "cfg-2": 14,
        "steps-ancestral-250": 8,
        "steps-ancestral-5": 8,
        "steps-ddim-250": 8,
        "steps-ddim-5": 8,
    }
    assert plan.sources["steps-ancestral-250"].name == "cfg-2"
    described = {s["setting"]: s for s in describe_plan(config)["settings"]}
    assert described["steps-ddim-5"]["samples"] == 8 and described["steps-ddim-5"]["shards"] == 2
    assert described["steps-ddim-5"]["model_evaluations"]["base"] == 8 * 2 * 5
    assert described["steps-ancestral-250"]["model_evaluations"]["base"] == 0

    summary = run_sweep(config, progress=False, log=lambda m: None)
    assert summary["shards_run"] == 2 * 4 + 3 * 2
    assert sorted(p.stem for p in (config.output_dir / "shards" / "steps-ddim-5").glob("*.npz")) == ["00000", "00001"]
    captions = json.loads((config.output_dir / "captions.json").read_text())
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    assert df.loc["cfg-2", "n_samples"] == 14 and df.loc["steps-ddim-5", "n_samples"] == 8
    for name, method, steps in [("steps-ddim-5", "ddim", 5), ("steps-ancestral-250", None, 0)]:
        images = np.stack(
            [fakes.fake_image(7, i, c, "cfg", 2.0, 8, method=method, steps=steps) for i, c in enumerate(captions[:8])]
        )
        expected = fakes.compute_metrics(fakes.featurize(images, captions[:8]), captions[:8], False)
        for m in METRICS:
            assert df.loc[name, m] == pytest.approx(expected[m], rel=1e-12), (name, m)
    assert df.loc["steps-ancestral-250", "fid"] != df.loc["cfg-2", "fid"]  # 8 samples, not 14
    cfg2 = [
        json.loads(p.read_text())["timings"]["generate_s"]
        for p in sorted((config.output_dir / "shards" / "cfg-2").glob("*.json"))
    ]
    assert df.loc["steps-ancestral-250", "generate_s"] == pytest.approx(sum(cfg2[:2]))
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0

    # all captions: the first shards are kept, only the rest are sampled (--force: the grid changed)
    everything = load_config(steps_config(tmp_path, "all.toml", grid=grid.replace("steps_n = 8", "steps_n = 0")))
    assert run_sweep(everything, force=True, progress=False, log=lambda m: None)["shards_run"] == 3 * 2
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    assert (df["n_samples"] == 14).all()
    for m in METRICS:
        assert df.loc["steps-ancestral-250", m] == df.loc["cfg-2", m]


def test_steps_n_validation_and_hash(tmp_path):
    plain = load_config(steps_config(tmp_path))
    for value, same in [("0", True), ("14", True), ("20", True), ("8", False), ("4", False)]:
        config = load_config(steps_config(tmp_path, f"n{value}.toml", grid=STEPS + f"steps_n = {value}\n"))
        assert (config.config_hash == plain.config_hash) is same, value
        assert config.n_samples(config.settings[-1]) == (14 if same else int(value))
        assert config.n_samples(config.settings[0]) == 14
    for value, message in [("6", "multiple of \\[run\\] shard_size \\(4\\)"), ("-4", ">= 0"), ('"8"', "int")]:
        (tmp_path / "bad.toml").write_text(
            steps_config(tmp_path, "b.toml").read_text().replace("steps_guidance", f"steps_n = {value}\nsteps_guidance")
        )
        with pytest.raises(ConfigError, match=rf"bad\.toml: \[grid[.]steps_n\].*{message}"):
            load_config(tmp_path / "bad.toml")


def test_clip_scale_0_is_the_clip_familys_own_unguided_point(tmp_path):
    """clip-0 samples the conditional model alone with the CLIP family's method: with
    clip_method = "ddim" its own samples, without it unguided's."""
    path = write_config(tmp_path, clip="[0.0, 2.0]")
    path.write_text(path.read_text().replace("clip = [0.0, 2.0]\n", 'clip = [0.0, 2.0]\nclip_method = "ddim"\n'))
    config = load_config(path)
    clip0 = next(s for s in config.settings if s.name == "clip-0")
    assert clip0.guidance == ("none", 0.0) and clip0.sampling(config)[1:] == ("ddim", "250")
    assert model_evaluations(config, clip0) == {"base": 250, "clip": 0, "upsampler": 0}
    assert config.clip_guided and make_plan(config).sources["clip-0"].name == "clip-0"
    run_sweep(config, progress=False, log=lambda m: None)
    captions = json.loads((config.output_dir / "captions.json").read_text())
    df = pd.read_parquet(config.output_dir / "results.parquet").set_index("setting")
    images = np.stack(
        [fakes.fake_image(7, i, c, "none", 0.0, 8, method="ddim", steps=250) for i, c in enumerate(captions)]
    )
    expected = fakes.compute_metrics(fakes.featurize(images, captions), captions, False)
    for m in METRICS:
        assert df.loc["clip-0", m] == pytest.approx(expected[m], rel=1e-12), m
    assert df.loc["clip-0", "family"] == "clip" and df.loc["clip-0", "method"] == "ddim"

    same = load_config(write_config(tmp_path, "same.toml", clip="[0.0]"))
    assert make_plan(same).sources["clip-0"].name == "unguided" and not same.clip_guided


def test_the_default_sweep_samples_both_families_alike_and_compares_the_fast_solvers():
    """glide_eval/configs/default.toml: classifier-free and CLIP guidance on one sampler, so CLIP
    scale 0 is the unguided setting (measured on its samples); its steps section compares
    dpmpp_2m and unipc with ancestral and DDIM against a reference the sweep samples itself."""
    from pathlib import Path

    import glide_eval
    from glide_eval.sweep.config import steps_reference

    config = load_config(Path(glide_eval.__file__).parent / "configs" / "default.toml")
    guidance = [s for s in config.settings if s.family != "steps"]
    assert {s.family for s in guidance} == {"none", "cfg", "clip"}
    assert {s.sampling(config)[1:] for s in guidance} == {("ancestral", "10")}
    plan = make_plan(config)
    assert plan.sources["clip-0"].name == "unguided"
    assert len([s for s in config.settings if s.family == "clip" and s.scale > 0]) >= 3
    assert {"ancestral", "ddim", "dpmpp_2m", "unipc"} <= set(config.grid.steps_methods)
    reference = steps_reference(config)
    assert reference is not None and plan.sources[reference].name == reference  # sampled, not borrowed
    assert reference not in {f"steps-{m}-{r}" for m in config.grid.steps_methods for r in config.grid.steps}
