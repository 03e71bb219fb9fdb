"""What a judging session shows: per model (a sampling setting), one image per prompt id,
all made from the same captions and seeds, so two models' images of one prompt id differ only
by the setting.

The application layer builds a `Catalog` from its own files (``glide_eval.judge.images``
reads sweep run directories); this package only needs where each image lies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageEntry:
    """One image: ``path`` is a PNG file, or an npz whose ``images`` array holds it at
    ``index`` ([3, H, W] uint8). It may only be served from inside ``root``."""

    image_id: str
    root: Path
    path: Path
    index: int | None = None


@dataclass
class Catalog:
    models: list[str]
    images: dict[str, dict[int, ImageEntry]]  # model -> prompt id -> image
    captions: dict[int, str]  # prompt id -> caption
    seed: int | str = ""  # the samples' seed (sample i is seeded by (seed, i))
    by_id: dict[str, ImageEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"need at least two settings to compare, got {len(self.models)}: {self.models}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"model names repeat: {self.models}")
        self.by_id = {}
        for model in self.models:
            for prompt_id, entry in self.images[model].items():
                if prompt_id not in self.captions:
                    raise ValueError(f"{model}: prompt id {prompt_id} has no caption")
                if entry.image_id in self.by_id:
                    raise ValueError(f"image id {entry.image_id!r} repeats")
                self.by_id[entry.image_id] = entry

    def pair_prompts(self) -> dict[tuple[int, int], list[int]]:
        """(i, j) with i < j -> the prompt ids both models have images of (pairs with none left out)."""
        out = {}
        for i, j in itertools.combinations(range(len(self.models)), 2):
            common = sorted(set(self.images[self.models[i]]) & set(self.images[self.models[j]]))
            if common:
                out[(i, j)] = common
        return out
