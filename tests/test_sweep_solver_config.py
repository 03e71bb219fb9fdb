"""Issue 21 in sweep configs: [sampler_options.METHOD] validated by samplers.sampling.check_sampler_options
(errors name the config key), respacings shorter than a solver's min_steps refused naming the key,
unknown solver names listing the known ones, and the options in the hashes only when given."""

from __future__ import annotations

import pytest
from test_sweep import write_config

from glide_eval.sweep.config import ConfigError, load_config
from glide_eval.sweep.rundir import generation_hash
from samplers.sampling import SAMPLERS, check_sampler_options, min_steps


def config(tmp_path, extra: str, steps: str = ""):
    path = write_config(tmp_path, extra=extra)
    if steps:
        path.write_text(path.read_text().replace("clip = [2.0]", "clip = [2.0]\n" + steps))
    return load_config(path)


def test_sampler_options_are_validated_and_reach_the_config(tmp_path):
    c = config(tmp_path, "[sampler_options.unipc]\norder = 3\ncorrector = false\n")
    assert c.sampler_options == {"unipc": {"order": 3, "corrector": False}}
    assert check_sampler_options("unipc", c.sampler_options["unipc"])["order"] == 3
    with pytest.raises(ConfigError, match=r"\[sampler_options.unipc\] sampler 'unipc' has no option 'ordr'"):
        config(tmp_path, "[sampler_options.unipc]\nordr = 3\n")
    with pytest.raises(ConfigError, match=r"\[sampler_options.ddim\] .*eta"):
        config(tmp_path, "[sampler_options.ddim]\neta = -1.0\n")
    with pytest.raises(
        ConfigError, match=r"\[sampler_options.heun\] unknown sampler 'heun' \(known: " + ", ".join(SAMPLERS)
    ):
        config(tmp_path, "[sampler_options.heun]\norder = 2\n")
    with pytest.raises(ConfigError, match=r"\[sampler.method\] must be one of \[.*'dpmpp_2m'.*\], got 'heun'"):
        config(tmp_path, '[sampler]\nmethod = "heun"\n')
    with pytest.raises(ConfigError, match=r"\[grid.steps_methods\] methods must be in \[.*'unipc'.*\], got 'heun'"):
        config(tmp_path, "", steps='steps = ["5"]\nsteps_methods = ["heun"]\n')


def test_respacing_shorter_than_the_solvers_order_is_refused(tmp_path):
    need = min_steps("unipc", {"order": 3})
    assert need == 3
    ok = config(
        tmp_path, "[sampler_options.unipc]\norder = 3\n", steps=f'steps = ["{need}"]\nsteps_methods = ["unipc"]\n'
    )
    assert ok.grid.steps == [str(need)]
    with pytest.raises(
        ConfigError,
        match=r"\[grid.steps\] respacing '2' has 2 steps; sampler 'unipc' needs at least 3"
        r" .*\[sampler_options.unipc\]",
    ):
        config(tmp_path, "[sampler_options.unipc]\norder = 3\n", steps='steps = ["2"]\nsteps_methods = ["unipc"]\n')
    assert min_steps("dpmpp_2m") == 2
    with pytest.raises(ConfigError, match=r"\[sampler.base_respacing\] respacing '1' has 1 steps; sampler 'dpmpp_2m'"):
        config(tmp_path, '[sampler]\nmethod = "dpmpp_2m"\nbase_respacing = "1"\n')


def test_solver_grids_in_steps_and_lambda_min_as_a_sampler_option(tmp_path):
    c = config(
        tmp_path,
        "[sampler_options.dpmpp_2m]\nlambda_min = -4.5\n",
        steps='steps = ["logsnr6", "karras6", "quad6", "6"]\nsteps_methods = ["ddim", "dpmpp_2m"]\n',
    )
    names = [s.name for s in c.settings if s.family == "steps"]
    assert "steps-dpmpp_2m-logsnr6" in names and "steps-ddim-quad6" in names and "steps-ddim-6" in names
    assert c.sampler_options == {"dpmpp_2m": {"lambda_min": -4.5}}
    with pytest.raises(ConfigError, match=r"\[sampler_options.unipc\] option 'lambda_min' must be a finite number"):
        config(tmp_path, '[sampler_options.unipc]\nlambda_min = "low"\n')
    with pytest.raises(ConfigError, match=r"\[grid.steps\] bad respacing 'logsnrx'"):
        config(tmp_path, "", steps='steps = ["logsnrx"]\nsteps_methods = ["ddim"]\n')
    with pytest.raises(ConfigError, match=r"\[grid.steps\] respacing 'logsnr1' has 1 steps; sampler 'dpmpp_2m'"):
        config(tmp_path, "", steps='steps = ["logsnr1"]\nsteps_methods = ["dpmpp_2m"]\n')


def test_sampler_options_enter_the_hashes_only_when_given(tmp_path):
    plain = config(tmp_path, "")
    assert "sampler_options" not in plain.hashed_data()
    empty = config(tmp_path, "[sampler_options]\n")
    assert empty.config_hash == plain.config_hash
    other = config(tmp_path, "[sampler_options.ddim]\neta = 0.5\n")
    assert other.config_hash != plain.config_hash
    assert generation_hash(other, {}) != generation_hash(plain, {})  # they change the samples


def test_dry_run_counts_model_evaluations_against_the_steps_reference():
    from pathlib import Path

    from glide_eval.sweep.describe import describe_plan, format_plan
    from samplers.sampling import model_evaluations

    solvers = load_config(Path(__file__).parent.parent / "glide_eval" / "configs" / "solvers.toml")
    plan = describe_plan(solvers)
    assert plan["steps_reference"] == "cfg-3"  # 250-step ancestral at cfg 3: the grid setting
    rows = {s["setting"]: s for s in plan["settings"]}
    for method in ("dpmpp_2m", "unipc", "plms", "ddim"):
        ratio = rows[f"steps-{method}-logsnr20"]["vs_steps_reference"]
        assert ratio == pytest.approx(model_evaluations(method, 20) / model_evaluations("ancestral", 250))
        assert ratio <= 0.1  # issue 21's target: a 20-step solver at <= 1/10 of the 250-step protocol
    assert rows["cfg-3"]["vs_steps_reference"] is None
    assert "0.080x cfg-3 per sample" in format_plan(plan)
    # issue 27: on the recommended grid, and the whole steps family's cost against the protocol
    assert {s["setting"].rsplit("-", 1)[1][:6] for s in plan["settings"] if s["family"] == "steps"} == {"logsnr"}
    assert plan["steps_vs_reference"] == pytest.approx((4 * 89 + 7) / 250)
    assert "steps settings together: 1.45x the base-model evaluations of cfg-3" in format_plan(plan)


def test_the_generator_passes_the_samplers_options(tmp_path, monkeypatch):
    import numpy as np

    from glide_eval.sweep import engines

    seen = []

    def fake_sample_images(models, captions, sample_ids, seed, **kwargs):
        seen.append((kwargs["sampler"], kwargs["sampler_options"]))

        class Result:
            images = np.zeros((len(captions), 3, 2, 2), np.uint8)
            nan_steps = [0] * len(captions)

        return Result()

    monkeypatch.setattr(engines, "sample_images", fake_sample_images)
    monkeypatch.setattr(engines, "convert_models", lambda models, dtype: models)
    c = config(
        tmp_path, "[sampler_options.unipc]\norder = 3\n", steps='steps = ["5"]\nsteps_methods = ["unipc", "ddim"]\n'
    )
    generate = engines.pipeline_generator(c, "cpu", lambda upsample, clip: object())
    for setting in c.settings:
        if setting.family == "steps":
            generate(["a"], [0], setting)
    assert seen == [("unipc", {"order": 3}), ("ddim", None)]
