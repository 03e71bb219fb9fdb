"""Guidance specs as text: the one grammar for "how a sample is guided".

- ``none`` or ``unguided`` (any case, surrounding spaces ignored): no guidance, scale 0;
- ``FAMILY:SCALE``: a guidance family and its finite scale, e.g. ``cfg:3``, ``clip:2.0``,
  ``" cfg : 1e1 "``. The samplers know the families in `GUIDANCE_KINDS`; other users of the
  grammar (human_eval's model names, the sweep config) decide which families they accept.

Torch-free, so that configs and judgment files are validated without loading models.
"""
from __future__ import annotations

import math
import re

GUIDANCE_KINDS = ("cfg", "clip", "none")  # what samplers.pipeline samples with
UNGUIDED_NAMES = ("none", "unguided")
_SPEC = re.compile(r"^\s*(?P<family>[^:]+?)\s*:\s*(?P<scale>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


def is_unguided(text: str) -> bool:
    return text.strip().lower() in UNGUIDED_NAMES


def split_guidance(text: str) -> tuple[str, float] | None:
    """(family, scale) of ``FAMILY:SCALE`` text with a finite scale, else None."""
    match = _SPEC.match(text)
    if match is None:
        return None
    scale = float(match["scale"])
    return (match["family"], scale) if math.isfinite(scale) else None


def parse_guidance(guidance, kinds: tuple[str, ...] = GUIDANCE_KINDS) -> tuple[str, float]:
    """("cfg", 3.0) | "cfg:3.0" | "none" -> (kind, scale); ValueError naming what is wrong."""
    if isinstance(guidance, str):
        if is_unguided(guidance):
            return ("none", 0.0)
        if guidance.strip() in kinds:  # a kind without a scale: scale 0
            return (guidance.strip(), 0.0)
        parsed = split_guidance(guidance)
        if parsed is None:
            raise ValueError(f"guidance must be 'none' or 'KIND:SCALE' (e.g. 'cfg:3'), got {guidance!r}")
        guidance = parsed
    kind, scale = guidance
    if kind not in kinds:
        raise ValueError(f"unknown guidance {kind!r}; expected one of {', '.join(kinds)}")
    return kind, float(scale)
