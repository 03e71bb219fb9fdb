"""The toy evaluation networks as `metrics.extractors` extractors.

- "toy-classifier" (kind "image"): {"pool": [N, 64] penultimate features (FID, precision/
  recall), "logits_unbiased": [N, 24] shape x colour logits (Inception Score)};
- "toy-clip" (kind "clip"): encode_images / encode_text of the clean toy CLIP (CLIP score).

`weights_path` is a folder holding classifier.pt / clip.pt, or one of those files; by default
the shipped weights (glide_eval/assets, or $GLIDE_EVAL_TOY_ASSETS).
"""

from __future__ import annotations

from pathlib import Path

import torch

from glide_eval.toy import models as toy_models
from glide_eval.toy.evalnets import to_input
from glide_eval.toy.tokenizer import count_truncated
from metrics.extractors import check_images, register_extractor

CLASSIFIER_NAME = "toy-classifier"
CLIP_NAME = "toy-clip"


def _check_images(images) -> torch.Tensor:
    return check_images(images)


def _load(name: str, weights_path, device):
    if weights_path is not None and Path(weights_path).is_file():
        path = Path(weights_path)
        if path.name != toy_models.FILES[name]:
            raise ValueError(f"{path}: expected the toy {name} file {toy_models.FILES[name]}")
        weights_path = path.parent
    return toy_models.load(name, weights_path, device)


class _ToyExtractor:
    """A toy network (`network`: its toy_models.FILES key) with its weights' sha256, run on
    `device` in batches of `batch_size`."""

    network: str

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 256):
        self.model, self.weights_sha256, _ = _load(self.network, weights_path, device)
        self.device = torch.device(device)
        self.batch_size = batch_size


class ToyClassifierExtractor(_ToyExtractor):
    kind, name, network = "image", CLASSIFIER_NAME, "classifier"

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 256):
        super().__init__(weights_path, device, batch_size)
        self.dims = {"pool": self.model.trunk.out_dim, "logits_unbiased": self.model.heads["category"].out_features}

    @torch.no_grad()
    def __call__(self, images) -> dict[str, torch.Tensor]:
        images = _check_images(images)
        pools, logits = [], []
        for batch in images.split(self.batch_size):
            pool, heads = self.model(to_input(batch.to(self.device)))
            pools.append(pool.float().cpu())
            logits.append(heads["category"].float().cpu())
        return {"pool": torch.cat(pools), "logits_unbiased": torch.cat(logits)}

    @torch.no_grad()
    def predict(self, images) -> dict[str, torch.Tensor]:
        """{attribute: predicted class [N]} (shape, colour, count, size, background)."""
        images = _check_images(images)
        out = [self.model.predict(b.to(self.device)) for b in images.split(self.batch_size)]
        return {k: torch.cat([o[k].cpu() for o in out]) for k in out[0]}


class ToyClipExtractor(_ToyExtractor):
    kind, name, network = "clip", CLIP_NAME, "clip"

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        images = _check_images(images)
        return torch.cat(
            [
                self.model.image_features(to_input(b.to(self.device))).float().cpu()
                for b in images.split(self.batch_size)
            ]
        )

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, int]:
        captions = list(captions)
        out = [
            self.model.text_features(captions[i : i + self.batch_size]).float().cpu()
            for i in range(0, len(captions), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.model.image_proj.out_features), count_truncated(captions)


def register() -> None:
    """Register "toy-classifier" and "toy-clip" with `metrics.extractors` (when it is installed)."""
    register_extractor(CLASSIFIER_NAME, ToyClassifierExtractor)
    register_extractor(CLIP_NAME, ToyClipExtractor)
