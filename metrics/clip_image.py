"""CLIP ViT-L/14 and ViT-L/14@336 image towers as image feature extractors (FD_CLIP, CMMD).

Registered names: ``clip-vit-l-14`` (OpenAI's ``ViT-L-14.pt``, 224 px) and ``clip-vit-l-14-336``
(``ViT-L-14-336px.pt``, 336 px, the network of CMMD), loaded through open_clip from the user's file
(TorchScript archive or state dict; open_clip reads the architecture from the weights, which must
be the named model's), by path or env ``GLIDE_EVAL_CLIP_IMAGE``. Nothing is downloaded.

Features (``{"pool": float32 [N, 768]}``): open_clip's ``encode_image``, the projected image
embedding, not normalised (CMMD normalises it, as its paper's code does; FD takes it as it is).

Preprocessing: dgm-eval's CLIP transform (Stein et al. 2023, ``CLIPEncoder.transform``): PIL's
bicubic resize to S x S (S = the model's input size), /255, OpenAI CLIP mean/std. For square
images it equals open_clip's own eval preprocessing (resize of the short side, centre crop).
Recorded as the extractor's ``protocol``; features and references of another protocol are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from metrics.dinov2 import pil_resize_normalise
from metrics.extractors import ExtractorError, check_images, load_openai_clip, open_weights, register_extractor

CLIP_IMAGE_ENV = "GLIDE_EVAL_CLIP_IMAGE"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Tower:
    image_size: int
    width: int
    layers: int
    patch: int


TOWERS = {"clip-vit-l-14": Tower(224, 1024, 24, 14), "clip-vit-l-14-336": Tower(336, 1024, 24, 14)}
OFFICIAL_FILES = {"clip-vit-l-14": "ViT-L-14.pt", "clip-vit-l-14-336": "ViT-L-14-336px.pt"}


def protocol(size: int) -> str:
    return f"dgm-eval-clip: PIL bicubic {size}x{size}, OpenAI CLIP mean/std; projected image embedding"


def _tower(visual) -> Tower:
    size = visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    patch = visual.conv1.kernel_size[0]
    return Tower(int(size), int(visual.transformer.width), len(visual.transformer.resblocks), int(patch))


class ClipImageExtractor:
    """An image extractor over a CLIP image tower: ``{"pool": float32 [N, E]}``."""

    kind = "image"

    def __init__(self, weights_path=None, device: str = "cpu", batch_size: int = 32, name: str = "", tower=None):
        what = f"CLIP image tower ({OFFICIAL_FILES.get(name, name)})"
        path = open_weights(self, weights_path, CLIP_IMAGE_ENV, what, name, device, batch_size)
        model = load_openai_clip(path)
        have = _tower(model.visual)
        if have != tower:
            raise ExtractorError(
                f"{path}: a CLIP image tower of {have.image_size} px, width {have.width}, {have.layers} layers, "
                f"patch {have.patch}, not {name} ({tower}): pass that model's file ({OFFICIAL_FILES.get(name, '?')})"
            )
        self.model = model.eval().to(self.device)
        self.size = have.image_size
        self.protocol = protocol(self.size)
        self.dims = {"pool": int(model.visual.output_dim)}

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        return pil_resize_normalise(images, self.size, OPENAI_MEAN, OPENAI_STD)

    @torch.no_grad()
    def __call__(self, images) -> dict[str, torch.Tensor]:
        images = check_images(images)
        out = [
            self.model.encode_image(self.pixels(b).to(self.device)).float().cpu() for b in images.split(self.batch_size)
        ]
        return {"pool": torch.cat(out)}


def register(name: str, tower: Tower) -> None:
    """Register a CLIP image-tower extractor `name` for files of tower `tower`."""
    register_extractor(name, partial(ClipImageExtractor, name=name, tower=tower))


for _name, _tower_spec in TOWERS.items():
    register(_name, _tower_spec)
