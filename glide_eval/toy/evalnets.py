"""The toy world's evaluation networks: an attribute classifier (the Inception stand-in)
and a clean-image CLIP (the CLIP-score stand-in). Both see images at 32x32.

Classifier heads: "category" (shape x colour, 24 classes; its logits feed the Inception
Score), "count", "size", "background". Its penultimate 128-d features feed FID and
precision/recall.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from glide_eval.toy.tokenizer import CLIP_CONTEXT, N_VOCAB, clip_tokenize
from glide_eval.toy.world import ATTRIBUTES

EVAL_SIZE = 32
HEADS = {
    "category": len(ATTRIBUTES["shape"]) * len(ATTRIBUTES["colour"]),
    "count": len(ATTRIBUTES["count"]),
    "size": len(ATTRIBUTES["size"]),
    "background": len(ATTRIBUTES["background"]),
}


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] (any H, W) -> float [N, 3, 32, 32] in [-1, 1] (area resize)."""
    x = images.float() / 127.5 - 1
    if x.shape[-2:] != (EVAL_SIZE, EVAL_SIZE):
        x = F.interpolate(x, size=(EVAL_SIZE, EVAL_SIZE), mode="area" if x.shape[-1] > EVAL_SIZE else "bilinear")
    return x


def category_label(shape: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    return shape * len(ATTRIBUTES["colour"]) + colour


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class ConvTrunk(nn.Module):
    """32x32 image -> [N, width*4] global features."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stages = nn.ModuleList([_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width)])
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = F.avg_pool2d(x, 2)
        return x.mean(dim=(2, 3))


class AttributeClassifier(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.trunk = ConvTrunk(width)
        self.heads = nn.ModuleDict({name: nn.Linear(self.trunk.out_dim, k) for name, k in HEADS.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """x in [-1, 1] at 32x32 -> (pool [N, D], {head: logits})."""
        pool = self.trunk(x)
        return pool, {name: head(pool) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict:
        """uint8 images -> {attribute: predicted class index [N]} (shape and colour from "category")."""
        _, logits = self(to_input(images))
        category = logits["category"].argmax(1)
        n_colour = len(ATTRIBUTES["colour"])
        return {
            "shape": category // n_colour,
            "colour": category % n_colour,
            "count": logits["count"].argmax(1),
            "size": logits["size"].argmax(1),
            "background": logits["background"].argmax(1),
        }


class TextEncoder(nn.Module):
    """Toy-vocabulary transformer; the feature of the END token is the caption's embedding."""

    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, embed_dim: int = 64):
        super().__init__()
        self.token = nn.Embedding(N_VOCAB, width)
        self.pos = nn.Parameter(torch.randn(CLIP_CONTEXT, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        pad = torch.arange(tokens.shape[1], device=tokens.device)[None] >= lens[:, None]
        h = self.blocks(self.token(tokens) + self.pos[None, : tokens.shape[1]], src_key_padding_mask=pad)
        last = h[torch.arange(h.shape[0], device=h.device), lens - 1]
        return self.proj(self.ln(last))


class ToyCLIP(nn.Module):
    def __init__(self, width: int = 32, embed_dim: int = 64):
        super().__init__()
        self.image_trunk = ConvTrunk(width)
        self.image_proj = nn.Linear(self.image_trunk.out_dim, embed_dim, bias=False)
        self.text = TextEncoder(embed_dim=embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), as CLIP

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.image_trunk(x))

    def text_features(self, captions: list[str]) -> torch.Tensor:
        tokens, lens = clip_tokenize(captions)
        device = self.log_scale.device
        return self.text(tokens.to(device), lens.to(device))


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, log_scale: torch.Tensor, same: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE; `same[i, j]` marks pairs with identical captions (soft targets)."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = log_scale.exp().clamp(max=100) * img @ txt.t()
    if same is None:
        target = torch.eye(len(img), device=img.device)
    else:
        target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (
        torch.sum(-target * logits.log_softmax(1), 1).mean()
        + torch.sum(-target.t() * logits.t().log_softmax(1), 1).mean()
    )
