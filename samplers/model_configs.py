"""Official GLIDE configurations and model construction.

    from samplers.model_configs import official_options, create_model, create_noised_clip, OFFICIAL_FILES
    official_options(name) -> dict          # "base", "upsample", "base-inpaint", "upsample-inpaint"
    create_model(options) -> GLIDEUNet      # reference `create_model` option names (+ optional "n_vocab")
    model.options                           # the dict it was built from
    model.encode_text(tokens, mask) -> {"xf_proj": [N, 4*num_channels], "xf_out": [N, xf_width, text_ctx]}
    model(x, timesteps, tokens, mask, *, text=None, low_res=None, inpaint_image=None, inpaint_mask=None)
        -> [N, 6, H, W]                     # timesteps are original (0..999); text= skips encode_text
    model.to_dtype(torch.float16 | torch.bfloat16)   # norms stay float32
    official_clip_config() -> dict          # the noised CLIP's config.yaml
    create_noised_clip(config) -> NoisedCLIP
    clip.text_embeddings(tokens [N, 77], lens [N]) -> [N, D]        # raw, unnormalised
    clip.image_embeddings(x [N, 3, 64, 64] in [-1, 1], t) -> [N, D]  # raw; scales to 0..255 inside
    clip.logit_scale                        # float multiplier (config "logit_scale", 100)
    clip.guidance_grad(x, t, text_features, grad_scale) -> d/dx of logit_scale * <norm(text), norm(image)>

Loading released files: `samplers.checkpoints`. Tokenizers: `samplers.tokenizers`.
"""

from __future__ import annotations

from samplers.noised_clip import NoisedCLIP
from samplers.unet import GLIDEUNet

# official checkpoint name -> released file name
OFFICIAL_FILES: dict[str, str] = {
    "base": "base.pt",
    "upsample": "upsample.pt",
    "base-inpaint": "base_inpaint.pt",
    "upsample-inpaint": "upsample_inpaint.pt",
    "clip/image-enc": "clip_image_enc.pt",
    "clip/text-enc": "clip_text_enc.pt",
}
GLIDE_MODELS = ("base", "upsample", "base-inpaint", "upsample-inpaint")

_BASE_OPTIONS = dict(
    image_size=64,
    num_channels=192,
    num_res_blocks=3,
    channel_mult="",
    num_heads=1,
    num_head_channels=64,
    num_heads_upsample=-1,
    attention_resolutions="32,16,8",
    dropout=0.1,
    text_ctx=128,
    xf_width=512,
    xf_layers=16,
    xf_heads=8,
    xf_final_ln=True,
    xf_padding=True,
    diffusion_steps=1000,
    noise_schedule="squaredcos_cap_v2",
    timestep_respacing="",
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_fp16=False,
    cache_text_emb=False,
    inpaint=False,
    super_res=False,
)
_UPSAMPLE_CHANGES = dict(image_size=256, num_res_blocks=2, noise_schedule="linear", super_res=True)

_CLIP_CONFIG = dict(
    logit_scale=100.0,
    beta_schedule="squaredcos_cap_v2",
    n_timesteps=1000,
    image_size=64,
    patch_size=4,
    n_vocab=65536,
    max_text_len=77,
    n_embd=512,
    n_head_state_text=64,
    n_head_text=8,
    n_xf_blocks_text=12,
    n_head_state_image=64,
    n_head_image=12,
    n_xf_blocks_image=12,
)

_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def official_options(name: str) -> dict:
    """Options of a released GLIDE model (reference `model_and_diffusion_defaults[_upsampler]`)."""
    if name not in GLIDE_MODELS:
        raise ValueError(f"unknown GLIDE model {name!r}; expected one of {list(GLIDE_MODELS)}")
    options = dict(_BASE_OPTIONS)
    if name.startswith("upsample"):
        options.update(_UPSAMPLE_CHANGES)
    options["inpaint"] = name.endswith("inpaint")
    return options


def official_clip_config() -> dict:
    """The released noised CLIP's configuration (reference `clip/config.yaml`)."""
    return dict(_CLIP_CONFIG)


def _channel_mult(options: dict) -> tuple[int, ...]:
    mult, size = options["channel_mult"], options["image_size"]
    if mult in ("", None):
        if size not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {size}; give channel_mult")
        return _DEFAULT_CHANNEL_MULT[size]
    mult = tuple(int(m) for m in (mult.split(",") if isinstance(mult, str) else mult))
    if 2 ** (len(mult) + 2) != size:
        raise ValueError(f"channel_mult {mult} does not fit image_size {size} (needs 2**(len+2) == size)")
    return mult


def _attention_ds(options: dict) -> tuple[int, ...]:
    res = options["attention_resolutions"]
    res = [int(r) for r in (res.split(",") if isinstance(res, str) else res)]
    return tuple(options["image_size"] // r for r in res)


def create_model(options: dict) -> GLIDEUNet:
    """Build the GLIDE UNet described by reference `create_model` options, in eval mode.

    The variant follows options["inpaint"] / options["super_res"]; "n_vocab" (default 50257)
    sizes the token embedding. Parameters are float32 and channels-last whatever "use_fp16"
    says (use `GLIDEUNet.to_dtype`); "cache_text_emb" is replaced by `encode_text` + `text=`.
    """
    required = [
        "image_size",
        "num_channels",
        "num_res_blocks",
        "channel_mult",
        "attention_resolutions",
        "num_heads",
        "num_head_channels",
        "text_ctx",
        "xf_width",
        "xf_layers",
        "xf_heads",
    ]
    missing = [k for k in required if k not in options]
    if missing:
        raise ValueError(f"model options lack {missing}")
    inpaint, super_res = bool(options.get("inpaint")), bool(options.get("super_res"))
    variant = {
        (False, False): "base",
        (False, True): "super_res",
        (True, False): "inpaint",
        (True, True): "super_res_inpaint",
    }[(inpaint, super_res)]
    model = GLIDEUNet(
        variant=variant,
        model_channels=options["num_channels"],
        num_res_blocks=options["num_res_blocks"],
        attention_ds=_attention_ds(options),
        channel_mult=_channel_mult(options),
        dropout=options.get("dropout", 0.0),
        num_heads=options["num_heads"],
        num_head_channels=options["num_head_channels"],
        num_heads_upsample=options.get("num_heads_upsample", -1),
        use_scale_shift_norm=options.get("use_scale_shift_norm", True),
        resblock_updown=options.get("resblock_updown", True),
        text_ctx=options["text_ctx"],
        xf_width=options["xf_width"],
        xf_layers=options["xf_layers"],
        xf_heads=options["xf_heads"],
        xf_final_ln=options.get("xf_final_ln", True),
        xf_padding=options.get("xf_padding", True),
        n_vocab=options.get("n_vocab", 50257),
        options=options,
    )
    return model.eval()


def create_noised_clip(config: dict) -> NoisedCLIP:
    """Build the noised CLIP (text + timestep-conditioned image encoder) from its config."""
    return NoisedCLIP(config).eval()
