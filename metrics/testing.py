"""Random-weight model files in the official formats, for tests and benches (no downloads).

- `make_random_inception(path)`: torch-fidelity's FeatureExtractorInceptionV3 state dict
  with He-initialised convolutions (the default init collapses features to ~1e-8), saved
  under the name torch-fidelity expects;
- `make_tiny_clip(path)`: a small OpenAI-format CLIP state dict (ViT, quick-GELU, 77-token
  context) that `open_clip.load_openai_model` reads like the released ViT-B/16 file.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import torch

from metrics.extractors import INCEPTION_FILENAME
from torchvision_compat import ensure_torchvision


def make_random_inception(folder, seed: int = 0) -> Path:
    ensure_torchvision()  # before torch_fidelity
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = Path(folder) / INCEPTION_FILENAME
    torch.save(model.state_dict(), path)
    return path


def make_tiny_clip(path, seed: int = 0, embed_dim: int = 32) -> Path:
    ensure_torchvision()  # before open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path


def dinov2_state_dict(arch, seed: int = 0, grid: int = 37) -> dict[str, torch.Tensor]:
    """Random weights in the official DINOv2 checkpoint layout (``dinov2_vit*14_pretrain.pth``:
    cls_token, pos_embed for a grid x grid patch grid + 1, mask_token, patch_embed.proj, blocks.N.
    {norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1/fc2 or mlp.w12/w3, ls2.gamma}, norm),
    drawn from a seeded numpy generator (the same numbers on every machine). Layer-scale factors
    are ~0.3 so that every block changes the features."""
    rng = np.random.default_rng(seed)
    d = arch.embed_dim

    def t(*shape, scale=0.02, mean=0.0):
        return torch.from_numpy((mean + scale * rng.standard_normal(shape)).astype(np.float32))

    state = {
        "cls_token": t(1, 1, d, scale=0.5),
        "pos_embed": t(1, 1 + grid * grid, d, scale=0.5),
        "mask_token": t(1, d),
        "patch_embed.proj.weight": t(d, 3, 14, 14, scale=0.05),
        "patch_embed.proj.bias": t(d),
    }
    hidden = 4 * d
    for i in range(arch.depth):
        p = f"blocks.{i}."
        state.update(
            {
                p + "norm1.weight": t(d, scale=0.1, mean=1.0),
                p + "norm1.bias": t(d),
                p + "attn.qkv.weight": t(3 * d, d, scale=d**-0.5),
                p + "attn.qkv.bias": t(3 * d),
                p + "attn.proj.weight": t(d, d, scale=d**-0.5),
                p + "attn.proj.bias": t(d),
                p + "ls1.gamma": t(d, scale=0.05, mean=0.3),
                p + "norm2.weight": t(d, scale=0.1, mean=1.0),
                p + "norm2.bias": t(d),
                p + "ls2.gamma": t(d, scale=0.05, mean=0.3),
            }
        )
        if arch.swiglu:
            inner = (int(hidden * 2 / 3) + 7) // 8 * 8  # the official SwiGLUFFNFused width
            state.update(
                {
                    p + "mlp.w12.weight": t(2 * inner, d, scale=d**-0.5),
                    p + "mlp.w12.bias": t(2 * inner),
                    p + "mlp.w3.weight": t(d, inner, scale=inner**-0.5),
                    p + "mlp.w3.bias": t(d),
                }
            )
        else:
            state.update(
                {
                    p + "mlp.fc1.weight": t(hidden, d, scale=d**-0.5),
                    p + "mlp.fc1.bias": t(hidden),
                    p + "mlp.fc2.weight": t(d, hidden, scale=hidden**-0.5),
                    p + "mlp.fc2.bias": t(d),
                }
            )
    state.update({"norm.weight": t(d, scale=0.1, mean=1.0), "norm.bias": t(d)})
    return state


def make_random_dinov2(path, arch, seed: int = 0) -> Path:
    """An official-format DINOv2 checkpoint file with `dinov2_state_dict` weights."""
    path = Path(path)
    torch.save(dinov2_state_dict(arch, seed), path)
    return path


def make_random_clip(
    path,
    image_size: int = 336,
    width: int = 1024,
    layers: int = 24,
    patch: int = 14,
    embed_dim: int = 768,
    text: tuple[int, int, int] = (768, 12, 12),
    seed: int = 0,
) -> Path:
    """An OpenAI-format CLIP state dict (what `open_clip.load_openai_model` reads from the released
    ``ViT-L-14.pt`` / ``ViT-L-14-336px.pt``) with open_clip's random initialisation; the defaults
    are ViT-L/14@336's (`text`: the text tower's width, heads, layers)."""
    ensure_torchvision()  # before open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=layers, width=width, patch_size=patch, image_size=image_size),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=text[0], heads=text[1], layers=text[2]),
        quick_gelu=True,
    )
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path
