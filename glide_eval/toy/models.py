"""The toy world's model configurations and loading of the shipped weights.

Weight files (in `ASSETS`, or a folder given by argument or $GLIDE_EVAL_TOY_ASSETS) are
torch files `{"kind", "options", "state_dict"}` with float16 tensors; they load into
float32 modules. Files: classifier.pt, clip.pt (evaluation nets), base.pt, upsample.pt,
noised_clip.pt (GLIDE-architecture generators and the noised CLIP for guidance).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from glide_eval.toy import tokenizer
from glide_eval.toy.evalnets import AttributeClassifier, ToyCLIP
from glide_eval.toy.tokenizer import CLIP_CONTEXT, N_VOCAB, TEXT_CTX
from samplers.model_configs import create_model, create_noised_clip
from samplers.pipeline import GlideModels
from storage import atomic_write_bytes, sha256_file

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ASSETS_ENV = "GLIDE_EVAL_TOY_ASSETS"
FILES = {
    "classifier": "classifier.pt",
    "clip": "clip.pt",
    "base": "base.pt",
    "upsample": "upsample.pt",
    "noised_clip": "noised_clip.pt",
}

_UNET_COMMON = {
    "num_heads": 1,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "dropout": 0.0,
    "text_ctx": TEXT_CTX,
    "xf_width": 64,
    "xf_layers": 2,
    "xf_heads": 2,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "timestep_respacing": "",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "n_vocab": N_VOCAB,
}
# GLIDE base architecture at 16x16 (official: 64x64, 192 channels, 3 res blocks, 16-layer xf_width 512)
BASE_OPTIONS = dict(
    _UNET_COMMON,
    image_size=16,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,1",
    attention_resolutions="8",
    noise_schedule="squaredcos_cap_v2",
    super_res=False,
)
# GLIDE upsampler architecture, 16 -> 32 (official: 64 -> 256, linear schedule). Cosine schedule here:
# under the linear one x_t is nearly pure noise for half the steps (alpha_bar < 0.05 above t ~ 540),
# where so small an eps-predicting model's x0 is poor and its samples drift from low_res (trained
# from scratch with the linear schedule: 16x16 MAE to low_res 0.227 / 0.077 at temperatures
# 0.997 / 0.6, against 0.209 / 0.041 with the cosine one; weights before the pinned retrain).
UPSAMPLE_OPTIONS = dict(
    _UNET_COMMON,
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,1,1",
    attention_resolutions="8",
    noise_schedule="squaredcos_cap_v2",
    super_res=True,
)
# Its sampling temperature (GLIDE's `upsample_temp`; GLIDE samples its own upsampler at 0.997).
# At 0.997 the noise its first steps start from decides part of its samples' colours (16x16 MAE
# to low_res 0.218 on validation scenes 0-127, noise seed 0); at 0.6 they follow low_res (0.046;
# 0.8: 0.066, 0.4: 0.043, 0: 0.057).
UPSAMPLE_TEMPERATURE = 0.6
# GLIDE noised-CLIP architecture at the base resolution over the toy vocabulary
# (official: 64x64 patch 4, 12+12 blocks of width 768/512)
NOISED_CLIP_CONFIG = {
    "logit_scale": 100.0,
    "beta_schedule": "squaredcos_cap_v2",
    "n_timesteps": 1000,
    "image_size": 16,
    "patch_size": 2,
    "n_vocab": N_VOCAB,
    "max_text_len": CLIP_CONTEXT,
    "n_embd": 64,
    "n_head_state_text": 32,
    "n_head_text": 2,
    "n_xf_blocks_text": 2,
    "n_head_state_image": 32,
    "n_head_image": 2,
    "n_xf_blocks_image": 3,
}
CLASSIFIER_OPTIONS = {"width": 16}
CLIP_OPTIONS = {"width": 16, "embed_dim": 64}


class MissingToyWeightsError(FileNotFoundError):
    pass


def assets_dir(directory=None) -> Path:
    return Path(directory or os.environ.get(ASSETS_ENV) or ASSETS)


def weight_path(name: str, directory=None) -> Path:
    if name not in FILES:
        raise ValueError(f"unknown toy model {name!r}; expected one of {list(FILES)}")
    path = assets_dir(directory) / FILES[name]
    if not path.is_file():
        raise MissingToyWeightsError(
            f"toy weights not found: {path} (retrain with `glide-eval toy-models --out {path.parent}`)"
        )
    return path


def build(kind: str, options: dict) -> torch.nn.Module:
    """A freshly initialised toy model of `kind` from its options."""
    if kind in ("base", "upsample"):
        return create_model(options)
    if kind == "noised_clip":
        return create_noised_clip(options)
    if kind == "classifier":
        return AttributeClassifier(**options)
    if kind == "clip":
        return ToyCLIP(**options)
    raise ValueError(f"unknown toy model kind {kind!r}")


def save_weights(model: torch.nn.Module, kind: str, options: dict, path) -> None:
    """Write `{"kind", "options", "state_dict" (float16)}` atomically. The bytes depend only on
    the tensors and options: torch.save names its zip archive's root folder after the file it
    writes (here a random temporary name), so the archive is built in memory ("archive")."""
    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save({"kind": kind, "options": dict(options), "state_dict": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(name: str, directory=None, device="cpu") -> tuple[torch.nn.Module, str, dict]:
    """(model in eval mode, float32, on `device`; sha256 of the file; its options)."""
    path = weight_path(name, directory)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = build(blob["kind"], blob["options"])
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: not a valid toy {name} weight file ({e})") from e
    return model.float().to(device).eval(), sha256_file(path), blob["options"]


def load_toy_models(directory=None, *, upsample: bool = False, clip: bool = False, device="cpu"):
    """The toy pipeline as `samplers.pipeline.GlideModels` (toy tokenizers, shipped weights)."""
    base, sha_base, base_options = load("base", directory, device)
    sha = {"toy/base": sha_base}
    up = up_options = clip_model = None
    if upsample:
        up, sha["toy/upsample"], up_options = load("upsample", directory, device)
    if clip:
        clip_model, sha["toy/noised_clip"], _ = load("noised_clip", directory, device)
    return GlideModels(
        base=base,
        base_options=base_options,
        upsampler=up,
        upsampler_options=up_options,
        clip=clip_model,
        tokenize=tokenizer.glide_tokenize,
        clip_tokenize=tokenizer.clip_tokenize,
        sha256=sha,
    )


BASE_RESOLUTION = BASE_OPTIONS["image_size"]  # base samples (sweep resolution without upsampling)
UPSAMPLED_RESOLUTION = UPSAMPLE_OPTIONS["image_size"]  # two-stage samples
