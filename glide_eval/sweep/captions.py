"""The captions a sweep samples: from a text file, MS-COCO, or the toy world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glide_eval import toy
from glide_eval.data import coco
from glide_eval.sweep.config import SweepConfig
from glide_eval.sweep.errors import MissingComponentError


def load_captions(config: SweepConfig) -> list[str]:
    """The sweep's N captions, in sample-index order."""
    cap = config.captions
    n = cap.n
    if cap.source == "file":
        path = Path(cap.path)
        if not cap.path or not path.is_file():
            raise MissingComponentError(f"[captions.path] caption file not found: {cap.path!r}")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(lines) < n:
            raise MissingComponentError(f"[captions.n] = {n} but {path} has only {len(lines)} captions")
        rng = np.random.default_rng(cap.seed)
        return [lines[i] for i in sorted(rng.choice(len(lines), size=n, replace=False))]
    if cap.source == "coco":
        if not cap.path:
            raise MissingComponentError("[captions.path] MS-COCO folder not set: set GLIDE_EVAL_COCO or captions.path")
        try:
            return list(coco.sample_captions(cap.path, n=n, seed=cap.seed))
        except coco.TooFewCaptions as e:
            raise MissingComponentError(f"[captions.n] {e}") from None
        except coco.CocoError as e:
            raise MissingComponentError(f"[captions.path] {e}") from None
    return list(toy.sample_captions(n=n, seed=cap.seed))
