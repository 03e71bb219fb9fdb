"""GLIDE's text-conditional ADM UNet (base, super-resolution, inpainting, both).

Module layout and state-dict names follow the reference (`glide_text2im/unet.py`,
`text2im_model.py`) so the released checkpoints load strictly; the computation is our own:
attention runs through `scaled_dot_product_attention`, norms always compute in float32.

Conditioning: the caption goes through a transformer (`encode_text`, once per sampling
loop); the projection of its last token is added to the timestep embedding and its
full output feeds the keys/values of every attention layer (prepended to the image's).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from samplers.text_transformer import FP32LayerNorm, Transformer


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] (cos half, then sin half) of possibly fractional timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) in float32 (returning the input dtype), optionally followed by SiLU."""

    def __init__(self, channels: int, silu: bool):
        super().__init__(32, channels)
        self.silu = silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[1] <= 2 * self.num_groups:
            # with one or two channels per group (narrow UNets such as the toy world's), the CPU
            # channels-last group norm kernel is 5-8x slower than a contiguous copy plus the
            # contiguous kernel ([128, 32, 16, 16]: 15 vs 2.6 ms); with the official models' 6+
            # channels per group it is the faster one ([2, 192, 64, 64]: 5.1 vs 12.8 ms)
            x = x.contiguous()
        y = F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)
        if self.silu:
            y = F.silu(y)
        return y.to(x.dtype)


def _resample(x: torch.Tensor, up: bool) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest") if up else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv (when resblock_updown is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_resample(x, up=True))


class Downsample(nn.Module):
    """Strided 3x3 conv downsampling (when resblock_updown is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding, optionally resampling by 2 (`up`/`down`).

    The `nn.Identity`/`nn.Dropout` placeholders keep the reference's Sequential indices
    (`in_layers.2`, `out_layers.3`), hence its state-dict keys.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, silu=True), nn.Identity(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, silu=not use_scale_shift_norm),
            nn.SiLU() if use_scale_shift_norm else nn.Identity(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[0](x)
        if self.resample is not None:
            up = self.resample == "up"
            h, x = _resample(h, up), _resample(x, up)
        h = self.in_layers[2](h)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(torch.addcmul(shift, norm(h), 1 + scale))
        else:
            h = rest(norm(h + emb_out))
        return self.skip_connection(x) + h


def _heads_view(t: torch.Tensor, heads: int, parts: int) -> torch.Tensor:
    """[N, L, heads*parts*ch] -> [parts, N, heads, L, ch] (head-major, like the reference)."""
    n, length, width = t.shape
    return t.view(n, length, heads, parts, width // (heads * parts)).permute(3, 0, 2, 1, 4)


def _conv1x1(x_nlc: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    return F.linear(x_nlc, conv.weight.squeeze(-1), conv.bias)


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values are prefixed with projected text tokens."""

    def __init__(
        self, channels: int, num_heads: int = 1, num_head_channels: int = -1, encoder_channels: int | None = None
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels, silu=False)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        n, c, *spatial = x.shape
        h = self.norm(x).reshape(n, c, -1).transpose(1, 2)  # [N, T, C] (a view when x is channels_last)
        q, k, v = _heads_view(_conv1x1(h, self.qkv), self.num_heads, 3)
        if encoder_out is not None:
            ek, ev = _heads_view(_conv1x1(encoder_out.transpose(1, 2).to(h.dtype), self.encoder_kv), self.num_heads, 2)
            k = torch.cat([ek, k], dim=2)
            v = torch.cat([ev, v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v)  # [N, heads, T, ch]
        a = _conv1x1(a.transpose(1, 2).reshape(n, -1, c), self.proj_out)  # [N, T, C]
        return x + a.transpose(1, 2).reshape(n, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Runs its layers, giving ResBlocks the embedding and attention layers the text."""

    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class GLIDEUNet(nn.Module):
    """Text-conditional ADM UNet predicting [eps, v] (6 channels) from a 3-channel x_t.

    `variant` selects the extra conditioning concatenated to x on the channel axis:
    "base" (none), "super_res" (low_res upsampled bilinearly), "inpaint"
    (inpaint_image * inpaint_mask, inpaint_mask), "super_res_inpaint" (both, in that order).
    Build it with `samplers.model_configs.create_model`.
    """

    EXTRA_CHANNELS = {"base": 0, "super_res": 3, "inpaint": 4, "super_res_inpaint": 7}

    def __init__(
        self,
        *,
        variant: str,
        model_channels: int,
        num_res_blocks: int,
        attention_ds: tuple[int, ...],
        channel_mult: tuple[int, ...],
        dropout: float = 0.0,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        text_ctx: int = 128,
        xf_width: int = 512,
        xf_layers: int = 16,
        xf_heads: int = 8,
        xf_final_ln: bool = True,
        xf_padding: bool = True,
        n_vocab: int = 50257,
        options: dict | None = None,
    ):
        super().__init__()
        if variant not in self.EXTRA_CHANNELS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(self.EXTRA_CHANNELS)}")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.variant = variant
        self.options = dict(options or {})
        self.in_channels = 3
        self.model_channels = model_channels
        self.n_levels = len(channel_mult)
        self.text_ctx = text_ctx
        self.xf_width = xf_width
        self.xf_padding = xf_padding
        self.dtype = torch.float32  # torso/transformer compute dtype, see to_dtype
        emb_dim = 4 * model_channels
        encoder_channels = xf_width or None

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, heads, num_head_channels, encoder_channels)

        in_ch = 3 + self.EXTRA_CHANNELS[variant]
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_ch, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch, silu=True), nn.Identity(), nn.Conv2d(input_ch, 6, 3, padding=1))

        if xf_width:
            self.transformer = Transformer(xf_width, xf_layers, xf_heads)
            self.final_ln = FP32LayerNorm(xf_width) if xf_final_ln else None
            self.token_embedding = nn.Embedding(n_vocab, xf_width)
            self.positional_embedding = nn.Parameter(torch.empty(text_ctx, xf_width))
            self.transformer_proj = nn.Linear(xf_width, emb_dim)
            if xf_padding:
                self.padding_embedding = nn.Parameter(torch.empty(text_ctx, xf_width))
            with torch.no_grad():  # the reference leaves these uninitialised; give them finite values
                self.positional_embedding.normal_(std=0.01)
                if xf_padding:
                    self.padding_embedding.normal_(std=0.01)
        self.use_channels_last()

    # ---- memory layout and precision -----------------------------------------------------
    def use_channels_last(self, enabled: bool = True) -> GLIDEUNet:
        """Store conv weights (and run activations) channels-last (NHWC); on by default.

        Convs run ~1.4x faster on CPU this way, and spatial attention reads its [N, T, C]
        input without a copy. Outputs are returned NCHW-contiguous either way.
        """
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def to_dtype(self, dtype: torch.dtype) -> GLIDEUNet:
        """Run convs, the transformer and its embeddings in `dtype`, as the reference's
        `convert_to_fp16` does: norms, the timestep MLP, the ResBlocks' embedding projections,
        the positional/padding embeddings and the output head stay float32."""
        self.dtype = dtype
        torso = [self.input_blocks, self.middle_block, self.output_blocks]
        for part in torso:
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.to(dtype)
        if self.xf_width:
            for m in self.transformer.modules():
                if isinstance(m, nn.Linear):
                    m.to(dtype)
            self.transformer_proj.to(dtype)
            self.token_embedding.to(dtype)
        return self

    # ---- text ------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> dict | None:
        """Caption features, computed once per sampling loop and passed back as `text=`.

        tokens: LongTensor [N, text_ctx]; mask: BoolTensor [N, text_ctx] (False = padding).
        Returns {"xf_proj": [N, 4*model_channels] float32, "xf_out": [N, xf_width, text_ctx]},
        or None for a model without a text encoder.
        """
        if not self.xf_width:
            return None
        if tokens is None or tokens.ndim != 2 or tokens.shape[1] != self.text_ctx:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"tokens must have shape [N, {self.text_ctx}], got {shape}")
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.xf_padding:
            if mask is None or tuple(mask.shape) != tuple(tokens.shape):
                shape = None if mask is None else tuple(mask.shape)
                raise ValueError(f"mask must have the tokens' shape {tuple(tokens.shape)}, got {shape}")
            xf_in = torch.where(mask.bool()[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1]).float()
        return {"xf_proj": xf_proj, "xf_out": xf_out.transpose(1, 2)}

    # ---- forward ---------------------------------------------------------------------------
    def _check(self, name: str, t: torch.Tensor | None, expected: tuple) -> None:
        if t is None:
            raise ValueError(f"{self.variant} model needs `{name}` of shape {expected}")
        if tuple(t.shape) != expected:
            raise ValueError(f"`{name}` must have shape {expected}, got {tuple(t.shape)}")

    def _model_input(self, x, low_res, inpaint_image, inpaint_mask) -> torch.Tensor:
        n, _, height, width = x.shape
        parts = [x]
        if self.variant in ("inpaint", "super_res_inpaint"):
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            self._check("inpaint_image", inpaint_image, tuple(x.shape))
            self._check("inpaint_mask", inpaint_mask, (n, 1, height, width))
            parts += [inpaint_image * inpaint_mask, inpaint_mask]
        elif inpaint_image is not None or inpaint_mask is not None:
            raise ValueError(f"{self.variant} model takes no inpaint_image/inpaint_mask")
        if self.variant in ("super_res", "super_res_inpaint"):
            if low_res is None or low_res.ndim != 4 or low_res.shape[:2] != (n, 3):
                shape = None if low_res is None else tuple(low_res.shape)
                raise ValueError(f"`low_res` must have shape ({n}, 3, h, w), got {shape}")
            parts.append(F.interpolate(low_res, (height, width), mode="bilinear", align_corners=False))
        elif low_res is not None:
            raise ValueError(f"{self.variant} model takes no low_res")
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        text: dict | None = None,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [N, 3, H, W]; timesteps: original steps (0..999), [N] or scalar.
        Text from `tokens`/`mask`, or `text=` a dict from `encode_text` (no recomputation).
        Returns [N, 6, H, W]: eps, then the variance interpolation value v."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape [N, 3, H, W], got {tuple(x.shape)}")
        n, _, height, width = x.shape
        factor = 2 ** (self.n_levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"x's height and width must be multiples of {factor}, got {height}x{width}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(n)
        if timesteps.shape != (n,):
            raise ValueError(f"timesteps must have shape ({n},), got {tuple(timesteps.shape)}")

        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        xf_out = None
        if self.xf_width:
            if text is None:
                text = self.encode_text(tokens, mask)
            if text["xf_proj"].shape[0] != n:
                raise ValueError(f"text batch {text['xf_proj'].shape[0]} != x batch {n}")
            emb = emb + text["xf_proj"].to(emb.dtype)
            xf_out = text["xf_out"]

        h = self._model_input(x, low_res, inpaint_image, inpaint_mask).to(self.dtype)
        if self.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)  # see use_channels_last
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, xf_out)
            skips.append(h)
        h = self.middle_block(h, emb, xf_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h.to(x.dtype)).contiguous()
