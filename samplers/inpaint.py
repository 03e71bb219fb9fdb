"""Inpainting helpers (mask: 1 = known pixel, shape [N, 1, H, W]; images in [-1, 1]).

* Fine-tuned inpainting models get `inpaint_image = image * mask` and `inpaint_mask` as model
  inputs, and the known region is re-imposed on every x0 prediction (`known_region_denoised_fn`;
  the loop then clips to [-1, 1]).
* Other models use mask replacement (GLIDE paper, Appendix E): after each step the known
  region of x is replaced by q_sample(image) at the new sample's noise level
  (`replacement_post_step`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from samplers.diffusion import Diffusion


def inpaint_model_kwargs(image: torch.Tensor, mask: torch.Tensor) -> dict:
    """Model inputs of the fine-tuned inpainting models."""
    return {"inpaint_image": image * mask, "inpaint_mask": mask}


def known_region_denoised_fn(image: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x0 -> x0 * (1 - mask) + image * mask."""
    known = image * mask

    def denoised_fn(x_start: torch.Tensor) -> torch.Tensor:
        return x_start * (1 - mask) + known * mask

    return denoised_fn


def replacement_post_step(image: torch.Tensor, mask: torch.Tensor, diffusion: Diffusion, noise: Callable):
    """post_step(x, i): known region <- q_sample(image, i, noise) (the image itself when i < 0)."""

    def post_step(x: torch.Tensor, i: int) -> torch.Tensor:
        known = image if i < 0 else diffusion.q_sample(image, i, noise(x))
        return x * (1 - mask) + known * mask

    return post_step


def upsample_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of a [N, 1, h, w] mask (64px -> 256px for the upsampler)."""
    return F.interpolate(mask.float(), size=(size, size), mode="nearest")
