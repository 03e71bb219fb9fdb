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

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from samplers.diffusion import Diffusion
from samplers.solvers import (
    check_first_order_below,
    check_unipc_options,
    finish_step,
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
        x = finish_step(x, i, step, out["pred_xstart"], diffusion, post_step, callback)
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
        x = finish_step(x, i, step, out["pred_xstart"], diffusion, post_step, callback)
    return x


@dataclass(frozen=True)
class SamplerRecord:
    """Everything the harness knows about one sampler: one `register_sampler` call adds a sampler
    to every consumer (pipeline, sweep configs, plan costs, CLI choices).

    * `loop`: the sampling function (this module's calling convention);
    * `options`: its own keyword options and their defaults (passed to `loop`);
    * `check(options) -> options`: validates and normalises the filled-in options (ValueError
      naming the option), or None when any value of the right key is fine;
    * `min_steps(options) -> int`: the fewest respaced steps it accepts;
    * `evaluations(steps) -> int`: model evaluations per sample for `steps` respaced steps;
    * `multistep`: it combines several model evaluations per step (DPM-Solver++ 2M, UniPC, PLMS):
      such solvers lose their order on a grid starting at the cosine schedule's capped last step.
    """

    name: str
    loop: Callable
    options: Mapping[str, object] = field(default_factory=dict)
    check: Callable[[dict], dict] | None = None
    min_steps: Callable[[dict], int] = lambda options: 1
    evaluations: Callable[[int], int] = lambda steps: steps
    multistep: bool = False


SAMPLERS: dict[str, SamplerRecord] = {}

# Options every sampler accepts besides its own: they choose the time grid, not the loop
# (samplers.schedules.space_timesteps; ignored by GLIDE's "N", "ddimN" and "fast27" respacings).
GRID_OPTIONS = ("lambda_min",)


def register_sampler(record: SamplerRecord, *, replace: bool = False) -> SamplerRecord:
    """Add `record` to `SAMPLERS`; a name already registered is a ValueError unless `replace`."""
    if record.name in SAMPLERS and not replace:
        raise ValueError(f"sampler {record.name!r} is already registered; pass replace=True to replace it")
    if not set(record.options).isdisjoint(GRID_OPTIONS):
        raise ValueError(f"sampler {record.name!r}: {', '.join(GRID_OPTIONS)} are grid options of every sampler")
    SAMPLERS[record.name] = record
    return record


def sampler_record(name: str) -> SamplerRecord:
    """The registered record of sampler `name` (ValueError naming the known ones)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}") from None


def get_sampler(name: str):
    """A sampler name of `SAMPLERS` -> the loop function."""
    return sampler_record(name).loop


def _check_ddim(options: dict) -> dict:
    eta = options["eta"]
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
        raise ValueError(f"ddim option 'eta' must be a number >= 0; got {eta!r}")
    return {**options, "eta": float(eta)}


def _check_unipc(options: dict) -> dict:
    check_unipc_options(options["order"], options["variant"], options["corrector"], options["first_order_below"])
    return options


def _check_dpmpp_2m(options: dict) -> dict:
    check_first_order_below(options["first_order_below"])
    return options


def _check_grid_options(options: dict) -> dict:
    lambda_min = options.get("lambda_min")
    if lambda_min is None:
        return options
    if isinstance(lambda_min, bool) or not isinstance(lambda_min, numbers.Real) or not math.isfinite(lambda_min):
        raise ValueError(f"option 'lambda_min' must be a finite number (a log-SNR); got {lambda_min!r}")
    return {**options, "lambda_min": float(lambda_min)}


def check_sampler_options(name: str, options: dict | None = None) -> dict:
    """The sampler's full options (its own defaults filled in; a grid option only when given), or a
    ValueError naming the bad key or value."""
    record = sampler_record(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(record.options) - set(GRID_OPTIONS))
    if unknown:
        known = ", ".join([*record.options, *GRID_OPTIONS])
        raise ValueError(f"sampler {name!r} has no option {unknown[0]!r}; its options: {known}")
    merged = _check_grid_options({**record.options, **options})
    own = {k: v for k, v in merged.items() if k not in GRID_OPTIONS}
    if record.check is not None:
        own = record.check(own)
    return {**own, **{k: merged[k] for k in GRID_OPTIONS if k in merged}}


def split_sampler_options(name: str, options: dict | None = None) -> tuple[dict, dict]:
    """(the loop's own options, the grid options given) of `check_sampler_options(name, options)`."""
    merged = check_sampler_options(name, options)
    return (
        {k: v for k, v in merged.items() if k not in GRID_OPTIONS},
        {k: v for k, v in merged.items() if k in GRID_OPTIONS},
    )


def min_steps(name: str, options: dict | None = None) -> int:
    """The fewest respaced steps the sampler accepts (multistep solvers need their order's history)."""
    own, _ = split_sampler_options(name, options)
    return sampler_record(name).min_steps(own)


def model_evaluations(name: str, num_steps: int) -> int:
    """Model calls per sample for `num_steps` respaced steps (a classifier-free call runs a doubled batch)."""
    return sampler_record(name).evaluations(num_steps)


register_sampler(SamplerRecord("ancestral", sample_ancestral))
register_sampler(SamplerRecord("ddim", sample_ddim, {"eta": 0.0}, check=_check_ddim))
register_sampler(
    SamplerRecord(
        "dpmpp_2m",
        sample_dpmpp_2m,
        {"first_order_below": None},
        check=_check_dpmpp_2m,
        min_steps=lambda options: 2,
        multistep=True,
    )
)
register_sampler(
    SamplerRecord(
        "unipc",
        sample_unipc,
        {"order": 2, "variant": "bh2", "corrector": True, "first_order_below": None},
        check=_check_unipc,
        min_steps=lambda options: options["order"],
        multistep=True,
    )
)
register_sampler(
    SamplerRecord("plms", sample_plms, min_steps=lambda options: 2, evaluations=plms_evaluations, multistep=True)
)


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
