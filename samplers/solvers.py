"""Fast ODE solvers for GLIDE's eps-prediction, learned-variance models (k-diffusion-style plain functions).

Same calling convention as `samplers.sampling` (model_fn gets ORIGINAL timesteps; cond_fn, denoised_fn,
post_step, callback as there). All three are deterministic probability-flow ODE solvers: they never draw
noise (`noise` is accepted for a uniform signature and ignored) and they ignore the variance half (v) of the
model output -- only eps is used.

Conventions shared by every solver here:

* Steps: the respaced process's kept timesteps, from the noisiest (index S-1) down to index 0, then one last
  step to the clean image (alpha = 1, sigma = 0), exactly where `sample_ddim` ends. With alpha_i =
  sqrt(alphas_cumprod_i), sigma_i = sqrt(1 - alphas_cumprod_i), lambda_i = log(alpha_i / sigma_i).
* Every model evaluation goes through the same path as the existing loops: x0 = predicted from eps, then
  `denoised_fn`, then clamp to [-1, 1] when `clip_denoised`; with `cond_fn` (noised-CLIP guidance) the score
  is shifted (eps' = eps - sqrt(1 - alpha_bar) * grad, `Diffusion.condition_score`) and x0 re-derived. The
  data-prediction solvers (DPM-Solver++, UniPC) use that x0; PLMS uses eps re-derived from it (as DDIM does).
* `post_step(x, i)` is applied to every new sample the solver forms at noise level i (i = -1 for the final
  sample), including the PLMS warm-up probe and UniPC's corrected sample; `callback` is called once per step
  with {"i", "step", "t", "x", "pred_xstart"} (x: the step's new sample, pred_xstart: this step's x0).
* Lower order at the ends: the final step to sigma = 0 is first order (x = x0 prediction), the multistep
  history is warmed up with lower orders (DPM-Solver++ 2M: first step order 1; UniPC: order min(p, steps
  done + 1, steps left); PLMS: see `sample_plms`). These are diffusers' conventions (lower_order_final=True,
  final_sigmas_type="zero"); tests/test_samplers_solvers.py checks equality with diffusers' schedulers.

Registry names (samplers.sampling.SAMPLERS): "dpmpp_2m", "unipc", "plms".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from samplers.diffusion import Diffusion

ModelFn = Callable[..., torch.Tensor]
CondFn = Callable[..., torch.Tensor]

UNIPC_VARIANTS = ("bh1", "bh2")
UNIPC_MAX_ORDER = 3


def require_steps(diffusion: Diffusion, minimum: int, solver: str) -> None:
    """A clear error when the respaced process has fewer steps than the solver needs."""
    if diffusion.num_steps < minimum:
        raise ValueError(
            f"sampler {solver!r} needs a respacing of at least {minimum} steps "
            f"(its multistep order); got {diffusion.num_steps}"
        )


def check_first_order_below(value) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise ValueError(f"option 'first_order_below' must be a finite log-SNR (or absent); got {value!r}")


def multistep_start(lam: float, first_order_below: float | None) -> bool:
    """Whether an x0 predicted at log-SNR `lam` may enter a multistep combination. With `first_order_below`
    set, predictions at noisier levels are left out: on the toy world the guided (cfg 3), clamped x0 is far
    from smooth in lambda there, and differences of it extrapolate noise (docs/solvers.md, issue 27)."""
    return first_order_below is None or lam >= first_order_below


def _level(diffusion: Diffusion, i: int) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at step index i in float64; i = -1 is the clean image (1, 0, inf)."""
    if i < 0:
        return 1.0, 0.0, math.inf
    alpha_bar = float(diffusion.alphas_cumprod[i])
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    return alpha, sigma, math.log(alpha) - math.log(sigma)


def step_indices(diffusion: Diffusion, progress: bool, desc: str):
    """The respaced step indices, noisiest first (a tqdm bar named `desc` with `progress`)."""
    indices = list(range(diffusion.num_steps))[::-1]
    if progress:
        from tqdm.auto import tqdm

        return tqdm(indices, desc=desc, leave=False)
    return indices


def denoise(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    i: int,
    extra_args: dict,
    cond_fn: CondFn | None,
    clip_denoised: bool,
    denoised_fn,
) -> torch.Tensor:
    """The processed x0 prediction at step index i (denoised_fn, clamp, then the CLIP score shift)."""
    t = diffusion.original_timesteps(i, x.shape[0], x.device)
    output = model_fn(x, t, **extra_args)
    output = output.to(torch.promote_types(x.dtype, torch.float32))
    out = diffusion.mean_variance(output, x, i, clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    if cond_fn is not None:
        out = diffusion.condition_score(out, x, i, cond_fn(x, t, **extra_args))
    return out["pred_xstart"]


def finish_step(x: torch.Tensor, i: int, step: int, x0: torch.Tensor, diffusion: Diffusion, post_step, callback):
    """The end of every sampler's step from index i: post_step (e.g. inpainting's reset of the known region)
    on the new sample, then the callback with the step's record; returns the new sample."""
    if post_step is not None:
        x = post_step(x, i - 1)
    if callback is not None:
        callback({"i": i, "step": step, "t": diffusion.timestep_map[i], "x": x, "pred_xstart": x0})
    return x


# -- DPM-Solver++ 2M -------------------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp_2m(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    extra_args=None,
    *,
    noise: Callable | None = None,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    denoised_fn=None,
    post_step=None,
    callback=None,
    progress: bool = False,
    first_order_below: float | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, second order, data prediction.

    Step s -> t with h = lambda_t - lambda_s and the previous step's x0 at lambda_p (r = (lambda_s - lambda_p) / h):
    x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) D, D = x0_s + (x0_s - x0_p) / (2 r) (diffusers'
    "midpoint" form, k-diffusion's sample_dpmpp_2m). The first step (no history) and the final step to
    sigma = 0 are first order (DDIM); so S steps cost S model evaluations. Needs at least 2 steps.

    `first_order_below` (a log-SNR, None: off): an x0 predicted at a level with lambda below it never
    enters the second-order difference, so the steps from there are DDIM steps (`multistep_start`).
    """
    require_steps(diffusion, 2, "dpmpp_2m")
    check_first_order_below(first_order_below)
    extra_args = extra_args or {}
    previous = None  # (x0, lambda) of the previous step
    for step, i in enumerate(step_indices(diffusion, progress, "dpmpp_2m")):
        x0 = denoise(model_fn, x, diffusion, i, extra_args, cond_fn, clip_denoised, denoised_fn)
        _, sigma_s, lambda_s = _level(diffusion, i)
        alpha_t, sigma_t, lambda_t = _level(diffusion, i - 1)
        if i == 0:
            x = x0
        else:
            h = lambda_t - lambda_s
            d = x0
            if previous is not None and multistep_start(previous[1], first_order_below):
                r = (lambda_s - previous[1]) / h
                d = x0 + (x0 - previous[0]) / (2.0 * r)
            x = (sigma_t / sigma_s) * x - (alpha_t * math.expm1(-h)) * d
        previous = (x0, lambda_s)
        x = finish_step(x, i, step, x0, diffusion, post_step, callback)
    return x


# -- UniPC -----------------------------------------------------------------------------------


def _unipc_b(h: float, order: int, variant: str) -> tuple[float, float, np.ndarray]:
    """(h phi_1(h), B(h), b_1..b_order) of UniPC for data prediction (hh = -h), float64."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    big_b = math.expm1(hh) if variant == "bh2" else hh
    b, h_phi_k, factorial = [], h_phi_1 / hh - 1.0, 1
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / big_b)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, big_b, np.array(b)


def _unipc_differences(history: list, count: int, h: float) -> tuple[list[float], list[torch.Tensor]]:
    """r_k = (lambda_k - lambda_0) / h and D1_k = (x0_k - x0_0) / r_k for the `count` older history entries."""
    x0_0, lambda_0 = history[-1]
    ratios, diffs = [], []
    for k in range(1, count + 1):
        x0_k, lambda_k = history[-1 - k]
        r = (lambda_k - lambda_0) / h
        ratios.append(r)
        diffs.append((x0_k - x0_0) / r)
    return ratios, diffs


def _unipc_predict(
    x: torch.Tensor, history: list, source: tuple, target: tuple, order: int, variant: str
) -> torch.Tensor:
    """UniP-order (B(h) form) from level `source` to `target` with x0 history (newest last)."""
    _, sigma_s, lambda_s = source
    alpha_t, sigma_t, lambda_t = target
    if sigma_t == 0.0:  # final step: first order by construction (lower order at the end)
        return history[-1][0]
    h = lambda_t - lambda_s
    h_phi_1, big_b, b = _unipc_b(h, order, variant)
    x_t = (sigma_t / sigma_s) * x - (alpha_t * h_phi_1) * history[-1][0]
    if order >= 2:
        ratios, diffs = _unipc_differences(history, order - 1, h)
        if order == 2:
            rhos = np.array([0.5])
        else:
            matrix = np.vander(np.array(ratios), order - 1, increasing=True).T
            rhos = np.linalg.solve(matrix, b[:-1])
        x_t = x_t - (alpha_t * big_b) * sum(float(rho) * d for rho, d in zip(rhos, diffs))
    return x_t


def _unipc_correct(
    x_last: torch.Tensor, history: list, x0_new: torch.Tensor, source: tuple, target: tuple, order: int, variant: str
) -> torch.Tensor:
    """UniC-order: re-solve the last step with the new x0 at its target level (no extra model evaluation)."""
    _, sigma_s, lambda_s = source
    alpha_t, sigma_t, lambda_t = target
    h = lambda_t - lambda_s
    h_phi_1, big_b, b = _unipc_b(h, order, variant)
    ratios, diffs = _unipc_differences(history, order - 1, h)
    if order == 1:
        rhos = np.array([0.5])
    else:
        rhos = np.linalg.solve(np.vander(np.array(ratios + [1.0]), order, increasing=True).T, b)
    x0_0 = history[-1][0]
    correction = float(rhos[-1]) * (x0_new - x0_0)
    for rho, d in zip(rhos[:-1], diffs):
        correction = correction + float(rho) * d
    return (sigma_t / sigma_s) * x_last - (alpha_t * h_phi_1) * x0_0 - (alpha_t * big_b) * correction


def check_unipc_options(order: int, variant: str, corrector: bool, first_order_below: float | None = None) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= UNIPC_MAX_ORDER:
        raise ValueError(f"unipc order must be an integer in 1..{UNIPC_MAX_ORDER}; got {order!r}")
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unknown unipc variant {variant!r}; known: {', '.join(UNIPC_VARIANTS)}")
    if not isinstance(corrector, bool):
        raise ValueError(f"unipc corrector must be true or false; got {corrector!r}")
    check_first_order_below(first_order_below)


@torch.no_grad()
def sample_unipc(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    extra_args=None,
    *,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    first_order_below: float | None = None,
    noise: Callable | None = None,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    denoised_fn=None,
    post_step=None,
    callback=None,
    progress: bool = False,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): UniP-p predictor + UniC corrector, data prediction, B(h) = expm1(-h) ("bh2").

    At each step the model is evaluated once at the new sample; the corrector (when on) re-solves the step that
    produced it with that evaluation (order of accuracy p + 1), then the predictor takes the next step with
    order min(order, steps done + 1, steps left) -- diffusers' UniPCMultistepScheduler (predict_x0=True,
    lower_order_final=True, final sigma 0). The final sample is not corrected (that would cost an extra
    evaluation), so S steps cost S model evaluations. Needs at least `order` steps.

    `first_order_below` (a log-SNR, None: off): x0 predictions at levels with lambda below it never enter a
    multistep combination: the history restarts after them (UniP-1, a DDIM step), and the step that
    produced a sample from such a level is not corrected.
    """
    check_unipc_options(order, variant, corrector, first_order_below)
    require_steps(diffusion, order, "unipc")
    extra_args = extra_args or {}
    history: list = []  # (x0, lambda), newest last, at most `order` entries
    x_last, last_order = None, 0
    for step, i in enumerate(step_indices(diffusion, progress, "unipc")):
        x0 = denoise(model_fn, x, diffusion, i, extra_args, cond_fn, clip_denoised, denoised_fn)
        level = _level(diffusion, i)
        if corrector and x_last is not None and multistep_start(history[-1][1], first_order_below):
            x = _unipc_correct(x_last, history, x0, _level(diffusion, i + 1), level, last_order, variant)
            if post_step is not None:
                x = post_step(x, i)
        history = [h for h in history if multistep_start(h[1], first_order_below)]
        history = (history + [(x0, level[2])])[-order:]
        last_order = min(order, len(history), diffusion.num_steps - step)
        x_last = x
        x = _unipc_predict(x, history, level, _level(diffusion, i - 1), last_order, variant)
        x = finish_step(x, i, step, x0, diffusion, post_step, callback)
    return x


# -- PLMS ------------------------------------------------------------------------------------


def _ddim_transfer(
    x: torch.Tensor, eps: torch.Tensor, source: tuple, target: tuple, clip_denoised: bool, denoised_fn
) -> torch.Tensor:
    """The deterministic DDIM step with a given eps: x_t = alpha_t x0 + sigma_t eps(x0), x0 = x0(eps).

    Without clip_denoised / denoised_fn this is (alpha_t / alpha_s) x + (sigma_t - alpha_t sigma_s / alpha_s) eps
    (PNDM's transfer, eq. 9); with them, x0 is processed as in the existing loops and eps re-derived from it, so
    a combined eps cannot carry x0 out of [-1, 1] (at t = 999, 1 / alpha = 2e4 would amplify it).
    """
    alpha_s, sigma_s, _ = source
    alpha_t, sigma_t, _ = target
    if not clip_denoised and denoised_fn is None:
        return (alpha_t / alpha_s) * x + (sigma_t - alpha_t * sigma_s / alpha_s) * eps
    x0 = (x - sigma_s * eps) / alpha_s
    if denoised_fn is not None:
        x0 = denoised_fn(x0)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    return alpha_t * x0 + (sigma_t / sigma_s) * (x - alpha_s * x0)


_ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@torch.no_grad()
def sample_plms(
    model_fn: ModelFn,
    x: torch.Tensor,
    diffusion: Diffusion,
    extra_args=None,
    *,
    noise: Callable | None = None,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    denoised_fn=None,
    post_step=None,
    callback=None,
    progress: bool = False,
) -> torch.Tensor:
    """PLMS, the pseudo linear multistep method of PNDM (Liu et al. 2022) in its community form.

    Each step is the DDIM transfer with eps' = the Adams-Bashforth combination of the last eps values
    (orders 2, 3, 4 as history builds up: (3e0 - e1)/2, (23e0 - 16e1 + 5e2)/12, (55e0 - 59e1 + 37e2 - 9e3)/24).
    Warm-up: the FIRST step is a pseudo improved-Euler (Heun) step -- a DDIM probe to the next level, one
    extra evaluation there, eps' = the mean of both -- instead of PNDM's Runge-Kutta warm-up (3 steps of 4
    evaluations). This is crowsonkb's PLMS of latent-diffusion (PR 51), used by GLIDE's community forks and by
    diffusers' PNDMScheduler(skip_prk_steps=True). S steps cost S + 1 model evaluations; the probe's eps is not
    kept in the history. Needs at least 2 steps. `clip_denoised` / `denoised_fn` act on each model evaluation's
    x0 (eps re-derived from it, as DDIM does) and again on the x0 of the combined eps that each step takes.

    Use a respacing that avoids t = 999 of the cosine schedule ("ddimN", "fast27"): there alpha = 4.9e-5 and
    the combined eps's error is amplified by 1 / alpha (unclipped, 8 steps of "8" reach |x| ~ 1e3).
    """
    require_steps(diffusion, 2, "plms")
    extra_args = extra_args or {}
    history: list[torch.Tensor] = []  # eps of the previous steps, newest last

    def eps_at(x_i: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = denoise(model_fn, x_i, diffusion, i, extra_args, cond_fn, clip_denoised, denoised_fn)
        return x0, diffusion.predict_eps(x_i, i, x0)

    for step, i in enumerate(step_indices(diffusion, progress, "plms")):
        x0, eps = eps_at(x, i)
        source, target = _level(diffusion, i), _level(diffusion, i - 1)
        history = (history + [eps])[-4:]
        if step == 0:
            probe = _ddim_transfer(x, eps, source, target, clip_denoised, denoised_fn)
            if post_step is not None:
                probe = post_step(probe, i - 1)
            eps_prime = (eps + eps_at(probe, i - 1)[1]) / 2
        else:
            weights = _ADAMS_BASHFORTH[len(history)]
            eps_prime = sum(w * e for w, e in zip(weights, reversed(history)))
        x = _ddim_transfer(x, eps_prime, source, target, clip_denoised, denoised_fn)
        x = finish_step(x, i, step, x0, diffusion, post_step, callback)
    return x


def plms_evaluations(num_steps: int) -> int:
    return num_steps + 1
