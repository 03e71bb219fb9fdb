"""Gaussian diffusion math for (respaced) GLIDE samplers.

`Diffusion` holds the float64 schedule of a (possibly respaced) process and the map from
its step indices i = 0..S-1 to the ORIGINAL training timesteps, which is what the model
and the noised CLIP are conditioned on. Per-step coefficients are applied in float32, as
the reference does. The model's 2C output channels are eps and the learned-range
variance value v in [-1, 1]: log variance = frac * log(beta_i) + (1 - frac) * log(posterior
variance_i) with frac = (v + 1) / 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from samplers.schedules import named_betas, respaced_betas, space_timesteps

_COEFFICIENTS = (
    "betas",
    "log_betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


class Diffusion:
    """A discrete Gaussian diffusion process over `len(betas)` steps (index 0 = least noisy)."""

    def __init__(self, betas, timestep_map: Iterable[int] | None = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.num_steps = len(betas)
        self.timestep_map = list(range(self.num_steps)) if timestep_map is None else [int(t) for t in timestep_map]
        if len(self.timestep_map) != self.num_steps:
            raise ValueError(f"timestep_map has {len(self.timestep_map)} entries for {self.num_steps} steps")

        alphas = 1.0 - betas
        self.betas = betas
        self.log_betas = np.log(betas)
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # posterior q(x_{i-1} | x_i, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the posterior variance is 0 at i = 0: its log is clipped to the value at i = 1
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1] if self.num_steps > 1 else betas[0], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self._tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    @classmethod
    def spaced(
        cls,
        schedule: str = "squaredcos_cap_v2",
        respacing: str = "",
        num_steps: int = 1000,
        lambda_min: float | None = None,
    ) -> Diffusion:
        """The `schedule` process over `num_steps` training steps, respaced by `respacing` (a solver grid
        such as "logsnr10" starts at `lambda_min`, default: the schedule's, see samplers.schedules)."""
        betas = named_betas(schedule, num_steps)
        kept = space_timesteps(num_steps, respacing, schedule=schedule, lambda_min=lambda_min)
        return cls(respaced_betas(betas, kept), timestep_map=kept)

    def __repr__(self) -> str:
        return f"Diffusion(num_steps={self.num_steps}, timesteps={self.timestep_map[0]}..{self.timestep_map[-1]})"

    # -- coefficients -----------------------------------------------------------------
    def coef(self, name: str, i: int, like: torch.Tensor) -> torch.Tensor:
        """Coefficient `name` at step index i as a float32 scalar tensor on `like`'s device."""
        table = self._tables.get(like.device)
        if table is None:
            table = {n: torch.from_numpy(getattr(self, n)).float().to(like.device) for n in _COEFFICIENTS}
            self._tables[like.device] = table
        return table[name][i]

    def original_timesteps(self, i: int, batch: int, device) -> torch.Tensor:
        """The ORIGINAL training timestep of step index i, repeated for a batch (int64)."""
        return torch.full((batch,), self.timestep_map[i], dtype=torch.long, device=device)

    # -- forward process and x0/eps conversions -------------------------------------------
    def q_sample(self, x_start: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_i | x_0) with the given unit noise."""
        return (
            self.coef("sqrt_alphas_cumprod", i, x_start) * x_start
            + self.coef("sqrt_one_minus_alphas_cumprod", i, x_start) * noise
        )

    def predict_xstart(self, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
        return self.coef("sqrt_recip_alphas_cumprod", i, x) * x - self.coef("sqrt_recipm1_alphas_cumprod", i, x) * eps

    def predict_eps(self, x: torch.Tensor, i: int, pred_xstart: torch.Tensor) -> torch.Tensor:
        return (self.coef("sqrt_recip_alphas_cumprod", i, x) * x - pred_xstart) / self.coef(
            "sqrt_recipm1_alphas_cumprod", i, x
        )

    def posterior_mean(self, x_start: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """Mean of q(x_{i-1} | x_i, x_0)."""
        return self.coef("posterior_mean_coef1", i, x) * x_start + self.coef("posterior_mean_coef2", i, x) * x

    # -- reverse process ----------------------------------------------------------------
    def mean_variance(
        self,
        model_output: torch.Tensor,
        x: torch.Tensor,
        i: int,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict:
        """p(x_{i-1} | x_i) from a [N, 2C, ...] (eps, v) model output.

        `denoised_fn` is applied to the x0 prediction before clipping to [-1, 1].
        Returns mean, variance, log_variance, pred_xstart and eps (the raw model eps).
        """
        channels = x.shape[1]
        if model_output.shape[1] != 2 * channels:
            raise ValueError(f"model output has {model_output.shape[1]} channels, expected {2 * channels} (eps, v)")
        eps, var_values = model_output[:, :channels], model_output[:, channels:]
        min_log = self.coef("posterior_log_variance_clipped", i, x)
        max_log = self.coef("log_betas", i, x)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart(x, i, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        return {
            "mean": self.posterior_mean(pred_xstart, x, i),
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def condition_mean(self, out: dict, grad: torch.Tensor) -> torch.Tensor:
        """Sohl-Dickstein et al. guidance: shift the mean by variance * grad log p(y | x)."""
        return out["mean"].float() + out["variance"] * grad.float()

    def condition_score(self, out: dict, x: torch.Tensor, i: int, grad: torch.Tensor) -> dict:
        """Song et al. guidance: eps' = eps - sqrt(1 - alpha_bar) * grad; x0 and mean re-derived."""
        alpha_bar = self.coef("alphas_cumprod", i, x)
        eps = self.predict_eps(x, i, out["pred_xstart"])
        eps = eps - (1 - alpha_bar).sqrt() * grad
        guided = dict(out)
        guided["pred_xstart"] = self.predict_xstart(x, i, eps)
        guided["mean"] = self.posterior_mean(guided["pred_xstart"], x, i)
        return guided
