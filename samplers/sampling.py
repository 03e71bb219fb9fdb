"""Sampling loops, k-diffusion style: plain functions of (model_fn, x, diffusion, extra_args, ...).

* `model_fn(x, t, **extra_args) -> [N, 2C, H, W]` (eps, v) where t holds the ORIGINAL
  training timesteps (the respaced index is mapped through `diffusion.timestep_map`).
* `cond_fn(x, t, **extra_args) -> grad log p(y | x_t)` (e.g. noised-CLIP guidance), also
  called with ORIGINAL timesteps.
* `noise(x) -> unit Gaussian like x`: the per-step noise source (see samplers.noise).
* `denoised_fn(x0) -> x0`: applied to every x0 prediction before clipping.
* `post_step(x, i) -> x`: applied to each new sample; i is the step index whose noise level
  the new sample has (-1 for the final sample). Used by mask-replacement inpainting.
* `callback({"i", "step", "t", "x", "pred_xstart"})`: called after every step.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from samplers.diffusion import Diffusion
from samplers.solvers import (
    check_unipc_options,
    plms_evaluations,
    sample_dpmpp_2m,
    sample_plms,
    sample_unipc,
    step_indices,
)

ModelFn = Callable[..., torch.Tensor]
CondFn = Callable[..., torch.Tensor]


def default_noise(like: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(like)


def p_mean_variance(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    i: int,
    extra_args=None,
    clip_denoised: bool = True,
    denoised_fn=None,
) -> dict:
    """Run the model at step index i and return p(x_{i-1} | x_i) (see Diffusion.mean_variance)."""
    t = diffusion.original_timesteps(i, x.shape[0], x.device)
    output = model_fn(x, t, **(extra_args or {}))
    return diffusion.mean_variance(output.float(), x, i, clip_denoised=clip_denoised, denoised_fn=denoised_fn)


@torch.no_grad()
def sample_ancestral(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    extra_args=None,
    *,
    noise: Callable = default_noise,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    denoised_fn=None,
    post_step=None,
    callback=None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling (DDPM p_sample) from x = x_T down to x_0.

    With `cond_fn`, the mean is shifted by variance * cond_fn(x_t, t) (Sohl-Dickstein et al.).
    """
    extra_args = extra_args or {}
    for step, i in enumerate(step_indices(diffusion, progress, "ancestral")):
        out = p_mean_variance(model_fn, x, diffusion, i, extra_args, clip_denoised, denoised_fn)
        mean = out["mean"]
        if cond_fn is not None:
            t = diffusion.original_timesteps(i, x.shape[0], x.device)
            mean = diffusion.condition_mean(out, cond_fn(x, t, **extra_args))
        if i > 0:
            x = mean + torch.exp(0.5 * out["log_variance"]) * noise(x)
        else:
            x = mean
        if post_step is not None:
            x = post_step(x, i - 1)
        if callback is not None:
            callback({"i": i, "step": step, "t": diffusion.timestep_map[i], "x": x, "pred_xstart": out["pred_xstart"]})
    return x


@torch.no_grad()
def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    extra_args=None,
    *,
    eta: float = 0.0,
    noise: Callable = default_noise,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    denoised_fn=None,
    post_step=None,
    callback=None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2020, eq. 12) from x_T down to x_0; eta = 0 is deterministic.

    With `cond_fn`, the score is shifted: eps' = eps - sqrt(1 - alpha_bar) * cond_fn(x_t, t).
    No noise is drawn when eta == 0.
    """
    extra_args = extra_args or {}
    for step, i in enumerate(step_indices(diffusion, progress, "ddim")):
        out = p_mean_variance(model_fn, x, diffusion, i, extra_args, clip_denoised, denoised_fn)
        if cond_fn is not None:
            t = diffusion.original_timesteps(i, x.shape[0], x.device)
            out = diffusion.condition_score(out, x, i, cond_fn(x, t, **extra_args))
        eps = diffusion.predict_eps(x, i, out["pred_xstart"])
        alpha_bar = diffusion.coef("alphas_cumprod", i, x)
        alpha_bar_prev = diffusion.coef("alphas_cumprod_prev", i, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        x = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if i > 0 and eta != 0:
            x = x + sigma * noise(x)
        if post_step is not None:
            x = post_step(x, i - 1)
        if callback is not None:
            callback({"i": i, "step": step, "t": diffusion.timestep_map[i], "x": x, "pred_xstart": out["pred_xstart"]})
    return x


SAMPLERS = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
    "plms": sample_plms,
}

# Each sampler's options (keyword arguments of its loop) and their defaults.
SAMPLER_OPTIONS = {
    "ancestral": {},
    "ddim": {"eta": 0.0},
    "dpmpp_2m": {},
    "plms": {},
    "unipc": {"order": 2, "variant": "bh2", "corrector": True},
}


def get_sampler(name: str):
    """A sampler name of `SAMPLERS` -> the loop function."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}") from None


def check_sampler_options(name: str, options: dict | None = None) -> dict:
    """The sampler's full options (defaults filled in), or a ValueError naming the bad key or value."""
    get_sampler(name)
    defaults = SAMPLER_OPTIONS.get(name, {})  # a sampler registered without options takes none
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ValueError(f"sampler {name!r} has no option {unknown[0]!r}; its options: {known}")
    merged = {**defaults, **options}
    if name == "ddim":
        eta = merged["eta"]
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
            raise ValueError(f"ddim option 'eta' must be a number >= 0; got {eta!r}")
        merged["eta"] = float(eta)
    if name == "unipc":
        check_unipc_options(merged["order"], merged["variant"], merged["corrector"])
    return merged


def min_steps(name: str, options: dict | None = None) -> int:
    """The fewest respaced steps the sampler accepts (multistep solvers need their order's history)."""
    options = check_sampler_options(name, options)
    return {"dpmpp_2m": 2, "plms": 2, "unipc": options.get("order", 1)}.get(name, 1)


def model_evaluations(name: str, num_steps: int) -> int:
    """Model calls per sample for `num_steps` respaced steps (a classifier-free call runs a doubled batch)."""
    get_sampler(name)
    return plms_evaluations(num_steps) if name == "plms" else num_steps


class NanMonitor:
    """Callback that counts, per sample, the steps whose new x has a non-finite value.

    Counting stays on the device (no synchronisation per step); read `counts` at the end.
    """

    def __init__(self, batch: int, device="cpu", then=None):
        self.counts = torch.zeros(batch, dtype=torch.long, device=device)
        self.then = then

    def __call__(self, info: dict) -> None:
        self.counts += (~torch.isfinite(info["x"])).flatten(1).any(dim=1).long()
        if self.then is not None:
            self.then(info)


class Recorder:
    """Callback that keeps every step's x and pred_xstart (on the CPU)."""

    def __init__(self):
        self.trajectory: list[torch.Tensor] = []
        self.pred_xstart: list[torch.Tensor] = []

    def __call__(self, info: dict) -> None:
        self.trajectory.append(info["x"].detach().cpu())
        self.pred_xstart.append(info["pred_xstart"].detach().cpu())
