"""Model names that encode a guidance method and scale (used by Figure 7).

- ``unguided``: sampling without guidance (the reference the figure is drawn relative to).
- ``FAMILY:SCALE``: guidance family (any text without ``:``, e.g. ``cfg``, ``clip``) and
  its scale as a number, e.g. ``cfg:3.0``, ``clip:2``.

Matching ignores case and surrounding spaces for ``unguided``; other names (e.g. ``dalle``)
are not guidance settings and are left out of the figure.
"""
from __future__ import annotations

import math
import re

UNGUIDED = "unguided"
_PATTERN = re.compile(r"^\s*(?P<family>[^:]+?)\s*:\s*(?P<scale>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


def is_unguided(name: str) -> bool:
    return name.strip().lower() == UNGUIDED


def parse_guidance(name: str) -> tuple[str, float] | None:
    """(family, scale) for ``FAMILY:SCALE`` names, else None."""
    match = _PATTERN.match(name)
    if match is None or is_unguided(match["family"]):
        return None
    scale = float(match["scale"])
    return (match["family"], scale) if math.isfinite(scale) else None
