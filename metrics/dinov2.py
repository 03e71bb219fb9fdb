"""DINOv2 ViT-S/B/L/G-14 feature extractors from the official checkpoint files, nothing downloaded.

Registered names (torch-fidelity's): ``dinov2-vit-s-14``, ``dinov2-vit-b-14``, ``dinov2-vit-l-14``,
``dinov2-vit-g-14``. Weights: the official pretrained files (``dinov2_vits14_pretrain.pth``,
``dinov2_vitb14_pretrain.pth``, ``dinov2_vitl14_pretrain.pth``, ``dinov2_vitg14_pretrain.pth``:
plain state dicts as torch.hub's ``dinov2_vit*14`` load them), by path or env ``GLIDE_EVAL_DINOV2``.
The file's architecture (width, depth, MLP or SwiGLU) must be the named model's.

Model: timm's VisionTransformer, which is the official one (patch 14, class token, layer scale,
no registers, LayerNorm eps 1e-6; ViT-G's SwiGLU feed-forward is timm's ``SwiGLUPacked``), built
at 224x224. The official model interpolates its 37x37 position embedding to the 16x16 patch grid
at every forward (bicubic, scale factor (16 + 0.1) / 37, no antialias); here that is done once at
load, with the same call. Features: the class token after the final norm, what the official
``forward`` returns (its head is the identity).

Preprocessing: dgm-eval's (Stein et al. 2023, ``DINOv2Encoder.transform``; EDM2's
``resize_mode='pil'`` is the same): each image through PIL's bicubic resize to 224x224, then
/255 and ImageNet mean/std. Recorded as the extractor's ``protocol`` (`PROTOCOL`); features
and reference statistics of another protocol are refused.

Checked against the official DINOv2 code on random weights (tests/fixtures/dinov2_golden.npz,
its note says how it was made).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from metrics.extractors import ExtractorError, check_images, open_weights, register_extractor

DINOV2_ENV = "GLIDE_EVAL_DINOV2"
SIZE = 224
PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROTOCOL = "dgm-eval-dinov2: PIL bicubic 224x224, ImageNet mean/std; final-norm class token"
INTERPOLATE_OFFSET = 0.1  # the official hub models' interpolate_offset


@dataclass(frozen=True)
class Arch:
    embed_dim: int
    depth: int
    heads: int
    swiglu: bool = False


ARCHS = {
    "dinov2-vit-s-14": Arch(384, 12, 6),
    "dinov2-vit-b-14": Arch(768, 12, 12),
    "dinov2-vit-l-14": Arch(1024, 24, 16),
    "dinov2-vit-g-14": Arch(1536, 40, 24, swiglu=True),
}
OFFICIAL_FILES = {
    "dinov2-vit-s-14": "dinov2_vits14_pretrain.pth",
    "dinov2-vit-b-14": "dinov2_vitb14_pretrain.pth",
    "dinov2-vit-l-14": "dinov2_vitl14_pretrain.pth",
    "dinov2-vit-g-14": "dinov2_vitg14_pretrain.pth",
}


def pil_resize_normalise(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """float32 [N, 3, size, size]: each uint8 image through PIL's bicubic resize to size x size
    (as torchvision's Resize((size, size)) on a PIL image), /255, then (x - mean) / std."""
    from PIL import Image

    arrays = images.permute(0, 2, 3, 1).numpy()
    resized = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in arrays])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The official DINOv2 position embedding [1, 1 + M*M, D] resampled to grid x grid patches
    (``interpolate_pos_encoding`` of the hub models: bicubic, scale factor (grid + 0.1) / M)."""
    n = pos_embed.shape[1] - 1
    m = int(round(n**0.5))
    if m * m != n:
        raise ExtractorError(f"position embedding of {n} patches is not a square grid")
    if m == grid:
        return pos_embed
    cls, patches = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    scale = (grid + INTERPOLATE_OFFSET) / m
    patches = torch.nn.functional.interpolate(
        patches.reshape(1, m, m, -1).permute(0, 3, 1, 2), mode="bicubic", antialias=False, scale_factor=(scale, scale)
    )
    if tuple(patches.shape[-2:]) != (grid, grid):
        raise ExtractorError(f"position embedding resampled to {tuple(patches.shape[-2:])}, not {grid}x{grid}")
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1).to(pos_embed.dtype)


def read_checkpoint(path) -> dict[str, torch.Tensor]:
    """The official state dict (``blocks.N.`` keys; chunked ``blocks.C.N.`` ones are flattened)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, a pickle with code
        raise ExtractorError(f"cannot read DINOv2 weights {path}: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "model" in state and "cls_token" not in state:
        state = state["model"]
    if not isinstance(state, dict) or "cls_token" not in state or "pos_embed" not in state:
        raise ExtractorError(f"{path}: not an official DINOv2 checkpoint (no cls_token / pos_embed)")
    out = {}
    for key, value in state.items():
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)
        out[key] = value
    return out


def file_arch(state: dict, heads: int) -> Arch:
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    swiglu = any(".mlp.w12." in k for k in state)
    return Arch(int(state["cls_token"].shape[-1]), depth, heads, swiglu)


def build_model(state: dict, arch: Arch) -> torch.nn.Module:
    """timm's VisionTransformer at 224x224 holding the official weights."""
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    options = {}
    if arch.swiglu:
        hidden = int(state["blocks.0.mlp.w12.weight"].shape[0])  # both halves (timm's packed layout)
        options = {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU, "mlp_ratio": hidden / arch.embed_dim}
    model = VisionTransformer(
        img_size=SIZE,
        patch_size=PATCH,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.heads,
        init_values=1e-5,
        num_classes=0,
        global_pool="token",
        **options,
    )
    weights = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        weights[key] = value.float()
    weights["pos_embed"] = interpolate_pos_embed(weights["pos_embed"], SIZE // PATCH)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ExtractorError(f"DINOv2 weights do not fit the model: {e}") from e
    return model.eval()


class Dinov2Extractor:
    """An image extractor: ``{"pool": float32 [N, D]}`` (D = 384 / 768 / 1024 / 1536)."""

    kind = "image"
    protocol = PROTOCOL

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 32, name: str = "", arch=None):
        what = f"DINOv2 ({OFFICIAL_FILES.get(name, name)})"
        path = open_weights(self, weights_path, DINOV2_ENV, what, name, device, batch_size)
        state = read_checkpoint(path)
        have = file_arch(state, arch.heads)
        if have != arch:
            raise ExtractorError(
                f"{path}: a DINOv2 of width {have.embed_dim}, depth {have.depth}"
                f"{' (SwiGLU)' if have.swiglu else ''}, not {name} (width {arch.embed_dim}, depth {arch.depth}"
                f"{', SwiGLU' if arch.swiglu else ''}): pass that model's file ({OFFICIAL_FILES.get(name, '?')})"
            )
        self.model = build_model(state, arch).to(self.device)
        self.dims = {"pool": arch.embed_dim}

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        return pil_resize_normalise(images, SIZE, IMAGENET_MEAN, IMAGENET_STD)

    @torch.no_grad()
    def __call__(self, images) -> dict[str, torch.Tensor]:
        images = check_images(images)
        out = [self.model(self.pixels(b).to(self.device)).float().cpu() for b in images.split(self.batch_size)]
        return {"pool": torch.cat(out)}


def register(name: str, arch: Arch) -> None:
    """Register a DINOv2 extractor `name` for checkpoints of architecture `arch`."""
    register_extractor(name, partial(Dinov2Extractor, name=name, arch=arch))


for _name, _arch in ARCHS.items():
    register(_name, _arch)
