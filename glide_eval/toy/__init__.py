"""The bundled toy world: seeded captioned shape images, a word tokenizer, and small trained
models (GLIDE-architecture base/upsampler/noised CLIP; an attribute classifier and a clean
CLIP as the evaluation networks), weights shipped in glide_eval/assets.

Importing it registers the extractors "toy-classifier" and "toy-clip" with
`metrics.extractors` (which imports this package itself when asked for extractors).
"""

from glide_eval.toy.extractors import register as _register
from glide_eval.toy.models import load_toy_models
from glide_eval.toy.world import dataset, parse_caption, render, sample_captions, scene

__all__ = ["dataset", "load_toy_models", "parse_caption", "reference_images", "render", "sample_captions", "scene"]


def reference_images(n: int, size: int = 32, seed: int = 0):
    """uint8 [n, 3, size, size] validation images: the toy stand-in for the MS-COCO reference set."""
    return dataset(n, "validation", size, seed=seed)[0]


_register()
