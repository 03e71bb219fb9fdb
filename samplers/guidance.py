"""Model functions for the sampling loops: conditional, classifier-free guided, CLIP-guided.

Each builder encodes the caption(s) with the text transformer ONCE (`model.encode_text`) and
returns `model_fn(x, t, **kwargs)` that calls the UNet with `text=` the cached encoding.
Extra model inputs (`low_res`, `inpaint_image`, `inpaint_mask`) are given per sample row.
`autocast` (a torch dtype or None) runs the model under torch.autocast on x's device; the
sampling arithmetic itself stays in float32.
"""

from __future__ import annotations

import contextlib

import torch


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def conditional_model_fn(model, tokens, mask, autocast: torch.dtype | None = None, **model_kwargs):
    """The text-conditional model on the given rows, text encoded once."""
    with torch.no_grad(), _autocast(tokens.device, autocast):
        text = model.encode_text(tokens, mask)

    def model_fn(x, t, **_):
        with _autocast(x.device, autocast):
            return model(x, t, text=text, **model_kwargs).float()

    return model_fn


def classifier_free_model_fn(
    model,
    tokens,
    mask,
    uncond_tokens,
    uncond_mask,
    guidance_scale: float,
    autocast: torch.dtype | None = None,
    **model_kwargs,
):
    """Classifier-free guidance on one copy of x (n rows).

    Each call runs the model once on [x; x] with [caption; empty caption] text (encoded once,
    here) and returns eps = uncond + s * (cond - uncond) with the conditional half's variance
    channels. `model_kwargs` tensors have n rows and are doubled here.
    """
    n = tokens.shape[0]
    if uncond_tokens.shape[0] != n:
        raise ValueError(f"{uncond_tokens.shape[0]} unconditional token rows for {n} captions")
    with torch.no_grad(), _autocast(tokens.device, autocast):
        text = model.encode_text(torch.cat([tokens, uncond_tokens]), torch.cat([mask, uncond_mask]))
    doubled = {k: torch.cat([v, v]) for k, v in model_kwargs.items()}

    def model_fn(x, t, **_):
        channels = x.shape[1]
        with _autocast(x.device, autocast):
            out = model(torch.cat([x, x]), torch.cat([t, t]), text=text, **doubled).float()
        eps, rest = out[:, :channels], out[:, channels:]
        cond_eps, uncond_eps = eps[:n], eps[n:]
        guided = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
        return torch.cat([guided, rest[:n]], dim=1)

    return model_fn


def _normalize(z: torch.Tensor) -> torch.Tensor:
    return z / (torch.linalg.norm(z, dim=-1, keepdim=True) + 1e-12)


def clip_cond_fn(clip, clip_tokens, clip_lens, guidance_scale: float):
    """Noised-CLIP guidance gradient.

    cond_fn(x_t, t) = scale * d/dx [logit_scale * sum(norm(text_emb) * norm(image_emb(x_t, t)))]
    with t the ORIGINAL timesteps. `clip.logit_scale` is the multiplier itself (100 for the
    released model; the reference stores its log and exponentiates).
    """
    with torch.no_grad():
        text_emb = _normalize(clip.text_embeddings(clip_tokens, clip_lens).float())
    logit_scale = float(clip.logit_scale)

    def cond_fn(x, t, **_):
        with torch.enable_grad():
            x_var = x.detach().float().requires_grad_(True)
            image_emb = _normalize(clip.image_embeddings(x_var, t).float())
            loss = logit_scale * (text_emb * image_emb).sum()
            grad = torch.autograd.grad(loss, x_var)[0].detach()
        return grad * guidance_scale

    return cond_fn
