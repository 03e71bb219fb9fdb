"""Schedules, respacing and Gaussian diffusion math against golden data and closed forms."""

import json
import math

import numpy as np
import pytest
import torch

from samplers.diffusion import Diffusion
from samplers.schedules import (
    DEFAULT_LAMBDA_MIN,
    capped_start_advice,
    count_steps,
    log_snr,
    named_betas,
    respaced_betas,
    space_timesteps,
)


def test_betas_and_respacing_match_reference_fixture(golden_dir):
    data = json.loads((golden_dir / "schedules.json").read_text())
    for key, expected in data.items():
        kind, name = key.split("/", 1)
        if kind == "betas":
            np.testing.assert_allclose(named_betas(name, len(expected)), expected, rtol=1e-12, atol=0)
        else:
            assert space_timesteps(1000, name) == expected, name


def test_cosine_alphas_cumprod_closed_form():
    betas = named_betas("squaredcos_cap_v2", 1000)
    alphas_cumprod = np.cumprod(1 - betas)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = np.array([f((i + 1) / 1000) / f(0) for i in range(1000)])
    uncapped = betas < 0.999
    assert uncapped[:990].all() and not uncapped[-1]  # only the very last steps hit the cap
    np.testing.assert_allclose(alphas_cumprod[uncapped], expected[uncapped], rtol=1e-9)


def test_linear_schedule_endpoints_scale_with_steps():
    betas = named_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert named_betas("linear", 500)[-1] == pytest.approx(0.04)


@pytest.mark.parametrize(
    "spec,count",
    [("100", 100), ("250", 250), ("27", 27), ("10,10,3,2,2", 27), ("50,25", 75), ("1000", 1000), ("", 1000)],
)
def test_section_respacing_keeps_endpoints(spec, count):
    steps = space_timesteps(1000, spec)
    assert len(steps) == count and steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 999


def test_ddim_and_fast27_respacing():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    fast = space_timesteps(1000, "fast27")
    assert len(fast) == 27 and 999 not in fast and 997 in fast
    assert set(fast) - {997} == set(space_timesteps(1000, "10,10,3,2,2")) - {999}


@pytest.mark.parametrize("bad", ["abc", "fast28", "ddim", "ddimx", "ddim999", "2000", "10,,3", "-5", "1.5"])
def test_unknown_respacing_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="respacing|cannot divide|steps"):
        space_timesteps(1000, bad)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        named_betas("cosine")


def test_respacing_preserves_alphas_cumprod_at_kept_steps():
    betas = named_betas("squaredcos_cap_v2")
    kept = space_timesteps(1000, "fast27")
    spaced = Diffusion(respaced_betas(betas, kept), timestep_map=kept)
    np.testing.assert_allclose(spaced.alphas_cumprod, np.cumprod(1 - betas)[kept], rtol=1e-12)
    assert Diffusion.spaced("squaredcos_cap_v2", "fast27").timestep_map == kept


def test_posterior_matches_gaussian_product_closed_form():
    d = Diffusion.spaced("linear", "50")
    i = 17
    alpha = 1 - d.betas[i]
    abar_prev = d.alphas_cumprod_prev[i]
    # q(x_{i-1} | x_i, x0) ∝ N(x_i; sqrt(alpha) x_{i-1}, beta) N(x_{i-1}; sqrt(abar_prev) x0, 1 - abar_prev)
    precision = alpha / d.betas[i] + 1 / (1 - abar_prev)
    assert d.posterior_variance[i] == pytest.approx(1 / precision, rel=1e-12)
    x0, xt = torch.randn(2, 3, 4, 4, dtype=torch.float64).unbind(0)
    expected = (math.sqrt(alpha) / d.betas[i] * xt + math.sqrt(abar_prev) / (1 - abar_prev) * x0) / precision
    torch.testing.assert_close(d.posterior_mean(x0.float(), xt.float(), i).double(), expected, rtol=1e-5, atol=1e-6)
    # the variance at i = 0 is 0: its log is clipped to the value at i = 1
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]


def test_learned_range_variance_interpolates_logs():
    d = Diffusion.spaced("squaredcos_cap_v2", "25")
    x = torch.randn(2, 3, 4, 4)
    eps = torch.randn_like(x)
    for v, expected in (
        (-1.0, d.posterior_log_variance_clipped[5]),
        (1.0, math.log(d.betas[5])),
        (0.0, 0.5 * (d.posterior_log_variance_clipped[5] + math.log(d.betas[5]))),
    ):
        out = d.mean_variance(torch.cat([eps, torch.full_like(x, v)], 1), x, 5)
        torch.testing.assert_close(out["log_variance"], torch.full_like(x, expected), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out["variance"], torch.exp(out["log_variance"]))


def test_xstart_eps_round_trip_and_q_sample():
    d = Diffusion.spaced("squaredcos_cap_v2", "100")
    x0, noise = torch.randn(2, 2, 3, 8, 8).unbind(0)
    xt = d.q_sample(x0, 40, noise)
    torch.testing.assert_close(d.predict_xstart(xt, 40, noise), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.predict_eps(xt, 40, x0), noise, rtol=1e-4, atol=1e-4)
    assert d.original_timesteps(40, 3, "cpu").tolist() == [d.timestep_map[40]] * 3


def test_condition_score_shifts_eps_by_sqrt_one_minus_alpha_bar():
    d = Diffusion.spaced("squaredcos_cap_v2", "25")
    x, eps, grad = torch.randn(3, 1, 3, 4, 4).unbind(0)
    out = d.mean_variance(torch.cat([eps, torch.zeros_like(eps)], 1), x, 10, clip_denoised=False)
    guided = d.condition_score(out, x, 10, grad)
    expected_eps = eps - math.sqrt(1 - d.alphas_cumprod[10]) * grad
    torch.testing.assert_close(d.predict_eps(x, 10, guided["pred_xstart"]), expected_eps, rtol=1e-4, atol=1e-4)


def test_existing_respacings_ignore_the_grid_options(golden_dir):
    """The schedule and lambda_min only place the solver grids: GLIDE's strings keep their exact timesteps."""
    data = json.loads((golden_dir / "schedules.json").read_text())
    for key, expected in data.items():
        kind, name = key.split("/", 1)
        if kind != "betas":
            assert space_timesteps(1000, name, schedule="linear", lambda_min=-2.0) == expected, name
            assert Diffusion.spaced("squaredcos_cap_v2", name, lambda_min=-2.0).timestep_map == expected, name


def cosine_lambda():
    return log_snr(np.cumprod(1 - named_betas("squaredcos_cap_v2")))


def test_solver_grids_golden_timesteps():
    # lambda(995) = -5.078 is the last level >= -5.1 (diffusers' lambda_min_clipped for squaredcos_cap_v2)
    assert space_timesteps(1000, "logsnr10") == [0, 6, 31, 110, 328, 671, 883, 961, 987, 995]
    assert space_timesteps(1000, "karras10") == [0, 28, 171, 523, 812, 926, 968, 984, 992, 995]
    assert space_timesteps(1000, "quad10") == [0, 12, 49, 111, 197, 307, 442, 602, 786, 995]
    assert space_timesteps(1000, "logsnr5", schedule="linear") == [0, 30, 302, 722, 999]  # no clip: -5.06 at 999


@pytest.mark.parametrize("grid", ["logsnr", "karras", "quad"])
@pytest.mark.parametrize("steps", [2, 5, 6, 10, 25, 100, 250, 996])
def test_solver_grids_have_exactly_n_distinct_steps_from_0_to_lambda_min(grid, steps):
    kept = space_timesteps(1000, f"{grid}{steps}")
    assert len(kept) == steps == count_steps(f"{grid}{steps}") and kept == sorted(set(kept))
    assert kept[0] == 0 and kept[-1] == 995
    lam = cosine_lambda()
    assert lam[kept[-1]] >= DEFAULT_LAMBDA_MIN["squaredcos_cap_v2"] > lam[kept[-1] + 1]


def test_logsnr_grid_is_uniform_in_lambda_where_timesteps_allow():
    """Away from the low-noise end (where lambda moves 0.4 per timestep and rounding merges points), the
    levels of logsnr10 are within half a timestep's lambda of the uniform targets."""
    lam = cosine_lambda()[space_timesteps(1000, "logsnr10")]
    targets = np.linspace(lam[0], lam[-1], 10)
    per_step = np.abs(np.diff(cosine_lambda()))
    kept = space_timesteps(1000, "logsnr10")
    assert np.all(np.abs(lam - targets)[1:] <= per_step[np.array(kept[1:]) - 1])
    # karras: uniform in (sigma / alpha)^(1/7)
    kept = space_timesteps(1000, "karras25")
    roots = np.exp(-cosine_lambda()[kept] / 7)
    assert np.std(np.diff(roots)[5:]) < 0.1 * np.mean(np.diff(roots)[5:])


def test_lambda_min_moves_the_start_and_bad_values_are_clear_errors():
    lam = cosine_lambda()
    kept = space_timesteps(1000, "logsnr8", lambda_min=-3.0)
    assert lam[kept[-1]] >= -3.0 > lam[kept[-1] + 1]
    assert Diffusion.spaced("squaredcos_cap_v2", "logsnr8", lambda_min=-3.0).timestep_map == kept
    assert space_timesteps(1000, "logsnr8", lambda_min=-20.0)[-1] == 999  # below the schedule's end: no clip
    with pytest.raises(ValueError, match="lambda_min 6.0 leaves no timesteps"):
        space_timesteps(1000, "logsnr8", lambda_min=6.0)
    with pytest.raises(ValueError, match="quad997: 'squaredcos_cap_v2' has only 996 timesteps"):
        space_timesteps(1000, "quad997")
    for bad in ("logsnr", "karrasx", "quad1.5"):
        with pytest.raises(ValueError, match=f"bad respacing '{bad}'"):
            space_timesteps(1000, bad)
    with pytest.raises(ValueError, match="respacing must be like"):
        count_steps("logsnr0")


def test_capped_start_advice_names_the_better_grid():
    advice = capped_start_advice("squaredcos_cap_v2", space_timesteps(1000, "10"))
    assert "t = 999" in advice and "-6.5 to -9.9" in advice and "'logsnr10'" in advice
    for fine in ("ddim10", "fast27", "logsnr10", "karras10", "quad10"):
        assert capped_start_advice("squaredcos_cap_v2", space_timesteps(1000, fine)) is None, fine
    assert capped_start_advice("linear", space_timesteps(1000, "10")) is None  # the linear schedule is not capped
