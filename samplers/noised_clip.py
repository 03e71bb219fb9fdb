"""GLIDE's noised CLIP: a causal text encoder and a timestep-conditioned ViT image encoder.

State-dict names follow the reference (`glide_text2im/clip/encoders.py`: `blocks.input`,
`blocks.block_{i}.f_attn|f_mlp`, `blocks.output`; LayerNorm `g`/`b`, linear `w`/`b`), so
`clip_text_enc.pt` and `clip_image_enc.pt` load strictly into `text_encoder` and
`image_encoder`. The reference pads contexts to blocks of 32 and masks the padding out;
attending over the real context only (causal for text, dense for images) is the same.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# the original CLIP's per-channel pixel statistics (0..255 scale)
IMAGE_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_STDS = (68.50053285, 66.63215831, 70.32316309)


class LayerNorm(nn.Module):
    def __init__(self, n_state: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.g.shape, self.g, self.b, self.eps)


class Affine(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.w, std=n_in**-0.5)
        self.b = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class AttentionResblock(nn.Module):
    def __init__(self, n_state: int, n_heads: int, causal: bool):
        super().__init__()
        self.n_heads = n_heads
        self.causal = causal
        self.ln = LayerNorm(n_state)
        self.f_q = Affine(n_state, n_state)
        self.f_k = Affine(n_state, n_state, bias=False)
        self.f_v = Affine(n_state, n_state)
        self.f_c = Affine(n_state, n_state)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        n, length, width = m.shape
        r = self.ln(m)

        def heads(t):
            return t.view(n, length, self.n_heads, width // self.n_heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            heads(self.f_q(r)), heads(self.f_k(r)), heads(self.f_v(r)), is_causal=self.causal
        )
        return m + self.f_c(a.transpose(1, 2).reshape(n, length, width))


class FullyConnectedResblock(nn.Module):
    def __init__(self, n_state: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f_1 = Affine(n_state, 4 * n_state)
        self.f_2 = Affine(4 * n_state, n_state)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m + self.f_2(F.gelu(self.f_1(self.ln(m))))


class TransformerBlock(nn.Module):
    def __init__(self, n_state: int, n_heads: int, causal: bool):
        super().__init__()
        self.f_attn = AttentionResblock(n_state, n_heads, causal)
        self.f_mlp = FullyConnectedResblock(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class TextEmbedding(nn.Module):
    def __init__(self, n_vocab: int, n_context: int, n_state: int):
        super().__init__()
        self.w_voc = nn.Parameter(torch.randn(n_vocab, n_state) * 0.02)
        self.w_pos = nn.Parameter(torch.randn(n_context, n_state) * 0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.w_voc) + self.w_pos[None]


class ImageEmbedding(nn.Module):
    """Patchify (0..255 input, CLIP-normalised), prepend the timestep token, add positions, LN."""

    def __init__(self, image_size: int, patch_size: int, n_state: int, n_timestep: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        n_patch = (image_size // patch_size) ** 2
        if n_timestep:
            self.w_t = nn.Parameter(torch.randn(n_timestep, n_state) * n_state**-0.5)
        else:
            self.pred_state = nn.Parameter(torch.randn(n_state) * n_state**-0.5)
        scale = (n_state * patch_size**2 / 2) ** -0.5
        self.patch_proj = nn.Parameter(torch.randn(n_state, 3, patch_size, patch_size) * scale)
        self.w_pos = nn.Parameter(torch.randn(1 + n_patch, n_state) * n_state**-0.5)
        self.ln = LayerNorm(n_state)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        means = torch.tensor(IMAGE_MEANS, dtype=x.dtype, device=x.device)[None, :, None, None]
        stds = torch.tensor(IMAGE_STDS, dtype=x.dtype, device=x.device)[None, :, None, None]
        x = F.conv2d((x - means) / stds, self.patch_proj, stride=self.patch_size)
        x = x.flatten(2).transpose(1, 2)  # [N, patches, n_state]
        if hasattr(self, "w_t"):
            first = F.embedding(t.long(), self.w_t)[:, None]
        else:
            first = self.pred_state[None, None].expand(x.shape[0], 1, -1)
        return self.ln(torch.cat([first, x], dim=1) + self.w_pos[None])


class _Output(nn.Module):
    def __init__(self, n_state: int, n_embd: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: [N, n_state]
        return self.f(self.ln(h))


class TextEncoder(nn.Module):
    def __init__(self, n_vocab: int, max_text_len: int, n_embd: int, n_head: int, n_xf_blocks: int, n_head_state: int):
        super().__init__()
        n_state = n_head * n_head_state
        self.max_text_len = max_text_len
        blocks = {"input": TextEmbedding(n_vocab, max_text_len, n_state)}
        blocks.update({f"block_{i}": TransformerBlock(n_state, n_head, causal=True) for i in range(n_xf_blocks)})
        blocks["output"] = _Output(n_state, n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.max_text_len:
            raise ValueError(f"CLIP text tokens must have shape [N, {self.max_text_len}], got {tuple(tokens.shape)}")
        if lens.shape != (tokens.shape[0],):
            raise ValueError(f"CLIP text lens must have shape ({tokens.shape[0]},), got {tuple(lens.shape)}")
        if bool(((lens < 1) | (lens > self.max_text_len)).any()):
            raise ValueError(f"CLIP text lens must lie in 1..{self.max_text_len}, got {lens.tolist()}")
        h = self.blocks["input"](tokens.long())
        for name, block in self.blocks.items():
            if name.startswith("block_"):
                h = block(h)
        last = h[torch.arange(h.shape[0], device=h.device), lens.long() - 1]  # the end token
        return self.blocks["output"](last)


class ImageEncoder(nn.Module):
    def __init__(
        self,
        image_size: int,
        patch_size: int,
        n_embd: int,
        n_head: int,
        n_xf_blocks: int,
        n_head_state: int,
        n_timestep: int,
    ):
        super().__init__()
        n_state = n_head * n_head_state
        self.image_size = image_size
        self.n_timestep = n_timestep
        blocks = {"input": ImageEmbedding(image_size, patch_size, n_state, n_timestep)}
        blocks.update({f"block_{i}": TransformerBlock(n_state, n_head, causal=False) for i in range(n_xf_blocks)})
        blocks["output"] = _Output(n_state, n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """x: [N, 3, S, S] on the 0..255 scale; t: original timesteps [N] (or scalar)."""
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"noised CLIP expects images of shape [N, 3, {s}, {s}], got {tuple(x.shape)}")
        if self.n_timestep:
            t = torch.as_tensor(t, device=x.device)
            t = t.expand(x.shape[0]) if t.ndim == 0 else t
            if t.shape != (x.shape[0],):
                raise ValueError(f"timesteps must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        h = self.blocks["input"](x, t)
        for name, block in self.blocks.items():
            if name.startswith("block_"):
                h = block(h)
        return self.blocks["output"](h[:, 0])


def _head_state(config: dict, kind: str) -> int:
    return config.get(f"n_head_state_{kind}", config.get("n_head_state", 64))


class NoisedCLIP(nn.Module):
    """Text and noised-image encoders of GLIDE's CLIP guidance model."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.logit_scale = float(config["logit_scale"])  # multiplier (the reference stores its log)
        self.image_size = config["image_size"]
        self.text_encoder = TextEncoder(
            config["n_vocab"],
            config["max_text_len"],
            config["n_embd"],
            config["n_head_text"],
            config["n_xf_blocks_text"],
            _head_state(config, "text"),
        )
        self.image_encoder = ImageEncoder(
            config["image_size"],
            config["patch_size"],
            config["n_embd"],
            config["n_head_image"],
            config["n_xf_blocks_image"],
            _head_state(config, "image"),
            config["n_timesteps"],
        )

    def text_embeddings(self, tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) text features [N, n_embd] of zero-padded CLIP tokens."""
        return self.text_encoder(tokens, lens)

    def image_embeddings(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Raw image features [N, n_embd] of noised images x in [-1, 1] at original timesteps."""
        return self.image_encoder((x + 1) * 127.5, timesteps)

    def guidance_grad(
        self, x: torch.Tensor, timesteps: torch.Tensor, text_features: torch.Tensor, grad_scale: float = 1.0
    ) -> torch.Tensor:
        """grad_x of logit_scale * sum(norm(text_features) * norm(image_embeddings(x, t))), times grad_scale.

        text_features: raw [N, n_embd] (normalised here). This is the reference's `cond_fn`.
        """
        z_t = text_features.detach()
        z_t = z_t / (z_t.norm(dim=-1, keepdim=True) + 1e-12)
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            z_i = self.image_embeddings(x_var, timesteps)
            z_i = z_i / (z_i.norm(dim=-1, keepdim=True) + 1e-12)
            loss = self.logit_scale * (z_t * z_i).sum()
            grad = torch.autograd.grad(loss, x_var)[0]
        return grad * grad_scale
