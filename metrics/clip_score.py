"""CLIP score (GLIDE paper, App. A.2): mean over samples of 100 * cos(image, caption).

No clamp at zero (unlike torchmetrics' CLIPScore). Captions longer than the CLIP context
(77 tokens with start/end markers) are truncated by the tokenizer; their count is reported.
"""

from __future__ import annotations

import numpy as np
import torch


def clip_cosines(image_emb, text_emb) -> np.ndarray:
    """Per-sample 100 * cosine similarity, float64 [N]."""
    a = torch.as_tensor(np.asarray(image_emb)).double()
    b = torch.as_tensor(np.asarray(text_emb)).double()
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"image and text embeddings must be [N, E] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return (100.0 * (a * b).sum(dim=1)).numpy()


def clip_scores(scorer, images, captions: list[str]) -> tuple[np.ndarray, int]:
    """Per-sample CLIP scores of images [N,3,H,W] uint8 against their captions, and the
    number of captions that had to be truncated."""
    if len(captions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
    text, n_truncated = scorer.encode_text(list(captions))
    return clip_cosines(scorer.encode_images(images), text), n_truncated
