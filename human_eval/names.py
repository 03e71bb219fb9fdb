"""Model names that encode a guidance method and scale (used by Figure 7).

- ``unguided``: sampling without guidance (the reference the figure is drawn relative to).
- ``FAMILY:SCALE``: guidance family (any text without ``:``, e.g. ``cfg``, ``clip``) and
  its scale as a number, e.g. ``cfg:3.0``, ``clip:2``;
- a sweep's setting names ``cfg-1.5``, ``clip-2`` (family and scale joined by ``-``), as the
  images a sweep saved are named.

Matching ignores case and surrounding spaces for ``unguided``; other names (e.g. ``dalle``)
are not guidance settings and are left out of the figure.
"""

from __future__ import annotations

from samplers.guidance_specs import split_guidance, split_setting_name

UNGUIDED = "unguided"
NAMING = (
    "Figure 7 reads model names FAMILY:SCALE (family and scale joined by ':', e.g. cfg:3.0, clip:2) "
    "or a sweep's setting names (cfg-1.5, clip-2), and 'unguided'"
)


def is_unguided(name: str) -> bool:
    return name.strip().lower() == UNGUIDED


def parse_guidance(name: str) -> tuple[str, float] | None:
    """(family, scale) for ``FAMILY:SCALE`` names (`samplers.guidance_specs`' grammar) and a sweep's
    ``cfg-1.5`` / ``clip-2`` setting names, else None."""
    parsed = split_guidance(name) or split_setting_name(name)
    if parsed is None or is_unguided(parsed[0]):
        return None
    return parsed
