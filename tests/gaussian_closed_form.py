"""Gaussian data x0 ~ N(mu, s^2 I): the exact eps-prediction model and the exact probability-flow ODE
solution, closed forms against which a solver's error is its discretization error alone.

For x_t = alpha x0 + sigma z the exact eps-prediction is E[z | x_t] = sigma (x_t - alpha mu) /
(alpha^2 s^2 + sigma^2), and the probability-flow ODE maps x_a to x_b = alpha_b mu +
sqrt(alpha_b^2 s^2 + sigma_b^2) / sqrt(alpha_a^2 s^2 + sigma_a^2) (x_a - alpha_a mu) (it keeps every
coordinate's standardized value). Used by tests/test_samplers_solvers.py and `bench/solvers.py --closed-form`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from samplers.diffusion import Diffusion
from samplers.sampling import get_sampler

# The data of the time-grid table (issue 27): N(0.1, 0.2^2), GLIDE's cosine schedule.
GRID_MU, GRID_S = 0.1, 0.2
GRID_STEPS = (10, 20, 40, 80)
GRID_STEPS_DDIM = (10, 20, 40, 100)  # "ddimN" needs an integer stride: no ddim80
CLOSED_FORM_SOLVERS = (
    ("ddim", {}),
    ("dpmpp_2m", {}),
    ("unipc", {}),
    ("unipc", {"order": 3}),
    ("unipc", {"variant": "bh1"}),
    ("plms", {}),
)


def gaussian_model_fn(alphas_cumprod, mu: float, s: float):
    """Exact (eps, v) output for x0 ~ N(mu, s^2); `alphas_cumprod` is indexed by the ORIGINAL timestep."""
    table = torch.as_tensor(np.asarray(alphas_cumprod), dtype=torch.float64)

    def model_fn(x, t):
        a = table[t].to(x.dtype)[:, None, None, None]
        eps = (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s**2 + 1 - a)
        return torch.cat([eps, torch.zeros_like(eps)], 1)

    return model_fn


def flow(x, alpha_bar_from: float, alpha_bar_to: float, mu: float, s: float):
    """The exact probability-flow ODE map between two noise levels for the Gaussian data."""
    a, b = alpha_bar_from, alpha_bar_to
    return math.sqrt(b) * mu + math.sqrt(b * s**2 + 1 - b) / math.sqrt(a * s**2 + 1 - a) * (x - math.sqrt(a) * mu)


def exact_denoised(x, alpha_bar: float, mu: float, s: float):
    """E[x0 | x_t] for the Gaussian data: what every solver's final step (x = x0 prediction) returns."""
    return mu + math.sqrt(alpha_bar) * s**2 / (alpha_bar * s**2 + 1 - alpha_bar) * (x - math.sqrt(alpha_bar) * mu)


def x_start(n=64):
    return torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def slope(steps_list, errs) -> float:
    """The order of convergence: minus the least-squares slope of log error against log steps."""
    return float(-np.polyfit(np.log(steps_list), np.log(errs), 1)[0])


def respacing(grid: str, steps: int) -> str:
    return str(steps) if grid == "uniform" else f"{grid}{steps}"


def grid_error(sampler: str, spacing: str, mu: float = GRID_MU, s: float = GRID_S, **options) -> float:
    """Mean absolute error of `sampler` on GLIDE's cosine schedule respaced by `spacing`, against the exact ODE
    solution from the grid's first (noisiest) timestep down to its last, followed by E[x0 | x] there (the
    solvers' final step)."""
    original = Diffusion.spaced("squaredcos_cap_v2", "")
    d = Diffusion.spaced("squaredcos_cap_v2", spacing)
    x = x_start()
    out = get_sampler(sampler)(
        gaussian_model_fn(original.alphas_cumprod, mu, s), x.clone(), d, clip_denoised=False, **options
    )
    exact = exact_denoised(flow(x, d.alphas_cumprod[-1], d.alphas_cumprod[0], mu, s), d.alphas_cumprod[0], mu, s)
    return (out - exact).abs().mean().item()


def closed_form_row(sampler: str, options: dict, grid: str) -> dict:
    """Errors at GRID_STEPS (GRID_STEPS_DDIM on "ddim"), the order of convergence over them (`order`) and
    over all but the fewest (`order_tail`: a 1-D affine error can change sign near 10 steps, e.g. DPM-Solver++
    2M's on "logsnr" between 8 and 10, which bends the slope from 10 steps)."""
    steps = GRID_STEPS_DDIM if grid == "ddim" else GRID_STEPS
    errors = [grid_error(sampler, respacing(grid, n), **options) for n in steps]
    method = "@".join([sampler, *(f"{k}={v}" for k, v in options.items())])
    return {
        "method": method,
        "grid": grid,
        "steps": list(steps),
        "errors": errors,
        "order": slope(steps, errors),
        "order_tail": slope(steps[1:], errors[1:]),
    }
