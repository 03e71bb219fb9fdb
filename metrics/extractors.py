"""Feature extractors by name (torch-fidelity style registry).

Interface (what every registered extractor provides)
----------------------------------------------------
An extractor is created by ``create_extractor(name, weights_path=None, device="cpu")``,
which calls the factory registered with ``register_extractor(name, factory)`` as
``factory(weights_path=..., device=...)``. Every extractor has:

- ``name`` (str, the registry name) and ``weights_sha256`` (str or None): recorded
  with every result and every cached reference statistic;
- ``kind``: ``"image"`` or ``"clip"``.

An **image** extractor (``kind == "image"``; Inception or a stand-in) is called on a
batch of images, uint8 tensor ``[N, 3, H, W]`` of any size, and returns
``{"pool": float32 [N, D], "logits_unbiased": float32 [N, K]}``: ``pool`` feeds FID and
precision/recall, ``logits_unbiased`` feeds the Inception Score. Its ``dims`` attribute
is ``{"pool": D, "logits_unbiased": K}``.

A **clip** extractor (``kind == "clip"``; a CLIP-like scorer) has
``encode_images(uint8 [N, 3, H, W]) -> float32 [N, E]`` and
``encode_text(list[str]) -> (float32 [N, E], n_truncated)``, and optionally
``count_truncated(list[str]) -> int``; embeddings need not be normalised (the CLIP score
normalises them).

Built in: ``"inception-v3-compat"`` (torch-fidelity's port of the 2015 TF Inception
graph; weights file ``weights-inception-2015-12-05-6726825d.pth`` by path or env
``GLIDE_EVAL_INCEPTION``) and ``"clip-vit-b-16"`` (open_clip ViT-B/16 from an
OpenAI-format file, by path or env ``GLIDE_EVAL_CLIP``). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from storage import given_path, sha256_file
from torchvision_compat import ensure_torchvision

INCEPTION = "inception-v3-compat"
CLIP_B16 = "clip-vit-b-16"
INCEPTION_ENV = "GLIDE_EVAL_INCEPTION"
CLIP_ENV = "GLIDE_EVAL_CLIP"
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch-fidelity's file: its name carries its sha256's first 8 hex
CLIP_CONTEXT_LENGTH = 77

_REGISTRY: dict[str, Callable] = {}


class ExtractorError(RuntimeError):
    """An extractor cannot be built or was given input it cannot take."""


def register_extractor(name: str, factory: Callable) -> None:
    """Register ``factory(weights_path=None, device="cpu") -> extractor`` under ``name``."""
    _REGISTRY[name] = factory


def list_extractors() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def create_extractor(name: str, weights_path: str | os.PathLike | None = None, device: str = "cpu"):
    _load_plugins()
    if name not in _REGISTRY:
        raise ExtractorError(f"unknown feature extractor {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](weights_path=weights_path, device=device)


PLUGIN_GROUP = "metrics.extractors"


def _load_plugins() -> None:
    """Import the modules that installed packages declare under the entry-point group
    `metrics.extractors` (e.g. glide-eval's toy world); importing one registers its extractors."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()


def resolve_weights(weights_path, env: str, what: str) -> Path:
    """The weights file from the argument or the environment; a clear error when absent."""
    missing = f"{what} weights not given: pass a path or set {env}"
    return given_path(weights_path, env, f"{what} weights file", missing, error=ExtractorError)


def check_known_weights(extractor) -> None:
    """ExtractorError unless the built-in Inception extractor's weights are torch-fidelity's file
    (sha256 starting with INCEPTION_SHA256_PREFIX). Other extractors are not checked."""
    if getattr(extractor, "name", None) != INCEPTION:
        return
    sha = extractor.weights_sha256 or ""
    if not sha.startswith(INCEPTION_SHA256_PREFIX):
        raise ExtractorError(
            f"{extractor.weights_path}: not torch-fidelity's Inception weights ({INCEPTION_FILENAME}, whose sha256 "
            f"starts with {INCEPTION_SHA256_PREFIX}); this file's sha256 is {sha[:16]}... A file with other weights "
            "loads fine but gives FID/IS values that no published number can be compared with. "
            "Pass --allow-unknown-inception to use it anyway"
        )


def check_images(images) -> torch.Tensor:
    """uint8 tensor [N, 3, H, W] from a tensor or numpy array; anything else is an error."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(getattr(images, "shape", ()))
        dtype = getattr(images, "dtype", type(images))
        raise ExtractorError(f"expected uint8 images [N, 3, H, W], got {dtype} {shape}")
    return images


class InceptionExtractor:
    """torch-fidelity's ``FeatureExtractorInceptionV3``: one forward pass gives both
    the 2048-d pool features and the 1008 unbiased logits. Its TF-1.x-exact bilinear
    resize to 299x299 is the only resize applied."""

    kind = "image"

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 64):
        ensure_torchvision()  # before torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_weights(weights_path, INCEPTION_ENV, "Inception")
        self.name = INCEPTION
        self.weights_path = str(path)
        self.weights_sha256 = sha256_file(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            model = FeatureExtractorInceptionV3(
                INCEPTION, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
            )
        except Exception as e:  # a wrong or truncated file
            raise ExtractorError(f"cannot load Inception weights {path}: {e}") from e
        self.model = model.eval().to(self.device)
        self.dims = {"pool": 2048, "logits_unbiased": 1008}

    @torch.no_grad()
    def __call__(self, images) -> dict[str, torch.Tensor]:
        images = check_images(images)
        pools, logits = [], []
        for batch in images.split(self.batch_size):
            pool, logit = self.model(batch.to(self.device))
            pools.append(pool.cpu())
            logits.append(logit.cpu())
        return {"pool": torch.cat(pools), "logits_unbiased": torch.cat(logits)}


class ClipExtractor:
    """open_clip CLIP from an OpenAI-format file (TorchScript archive or state dict),
    architecture read from the weights (ViT-B/16 for the released file).

    Images go through open_clip's own eval preprocessing (bicubic resize of the short
    side, center crop, normalise) via PIL, one image at a time, so the pixels the model
    sees are exactly those of open_clip's pipeline (a tensor-only resize differs from
    PIL's by up to one grey level)."""

    kind = "clip"

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 64):
        ensure_torchvision()  # before open_clip
        import open_clip

        path = resolve_weights(weights_path, CLIP_ENV, "CLIP")
        self.name = CLIP_B16
        self.weights_path = str(path)
        self.weights_sha256 = sha256_file(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
        except Exception as e:
            raise ExtractorError(f"cannot load CLIP weights {path}: {e}") from e
        self.model = model.eval().to(self.device)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.preprocess = open_clip.image_transform(
            size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
        )
        self.tokenizer = open_clip.get_tokenizer("ViT-B-16")
        self.context_length = int(model.positional_embedding.shape[0])

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).numpy()
        return torch.stack([self.preprocess(Image.fromarray(a)) for a in arrays])

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        images = check_images(images)
        out = [
            self.model.encode_image(self._pixels(b).to(self.device)).float().cpu()
            for b in images.split(self.batch_size)
        ]
        return torch.cat(out)

    def count_truncated(self, captions: list[str]) -> int:
        """Captions whose BPE tokens plus start/end markers exceed the context length."""
        return sum(len(self.tokenizer.encode(c)) + 2 > self.context_length for c in captions)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, int]:
        out = []
        for i in range(0, len(captions), self.batch_size):
            tokens = self.tokenizer(list(captions[i : i + self.batch_size]), context_length=self.context_length)
            out.append(self.model.encode_text(tokens.to(self.device)).float().cpu())
        return torch.cat(out), self.count_truncated(captions)


register_extractor(INCEPTION, InceptionExtractor)
register_extractor(CLIP_B16, ClipExtractor)
