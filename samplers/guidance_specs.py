"""Guidance specs as text: the one grammar for "how a sample is guided".

- ``none`` or ``unguided`` (any case, surrounding spaces ignored): no guidance, scale 0;
- ``FAMILY:SCALE``: a guidance family and its finite scale, e.g. ``cfg:3``, ``clip:2.0``,
  ``" cfg : 1e1 "``. A guided family needs its scale (``cfg`` alone is an error); the
  unguided names take none (``none:0`` is accepted). The samplers know the families in
  `GUIDANCE_KINDS`; other users of the grammar (human_eval's model names, the sweep config)
  decide which families they accept.
- a sweep's setting name ``FAMILY-SCALE`` for the guided families (``cfg-1.5``, ``clip-2``;
  `setting_name` writes it, `split_setting_name` reads it), so that judgments of a sweep's
  images can name models as the sweep does.

Torch-free, so that configs and judgment files are validated without loading models.
"""

from __future__ import annotations

import math
import re

GUIDANCE_KINDS = ("cfg", "clip", "none")  # what samplers.pipeline samples with
UNGUIDED_NAMES = ("none", "unguided")
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_SETTING = re.compile(rf"^\s*(?P<family>cfg|clip)-(?P<scale>{_NUMBER})\s*$")
_SPEC = re.compile(rf"^\s*(?P<family>[^:]+?)\s*:\s*(?P<scale>{_NUMBER})\s*$")


def is_unguided(text: str) -> bool:
    return text.strip().lower() in UNGUIDED_NAMES


def split_guidance(text: str) -> tuple[str, float] | None:
    """(family, scale) of ``FAMILY:SCALE`` text with a finite scale, else None."""
    return _family_scale(_SPEC.match(text))


def _family_scale(match) -> tuple[str, float] | None:
    """(family, scale) of a match of `_SPEC` / `_SETTING` with a finite scale, else None."""
    if match is None:
        return None
    scale = float(match["scale"])
    return (match["family"], scale) if math.isfinite(scale) else None


def setting_name(family: str, scale: float) -> str:
    """A sweep's name of a guidance setting: "unguided", "cfg-1.5", "clip-2"."""
    return "unguided" if family in UNGUIDED_NAMES else f"{family}-{scale:g}"


def split_setting_name(text: str) -> tuple[str, float] | None:
    """(family, scale) of a sweep's guided setting name ``cfg-1.5`` / ``clip-2``, else None."""
    return _family_scale(_SETTING.match(text))


def parse_guidance(guidance, kinds: tuple[str, ...] = GUIDANCE_KINDS) -> tuple[str, float]:
    """("cfg", 3.0) | "cfg:3.0" | "clip:2" | "none" | "unguided" -> (kind, scale); ValueError naming what is wrong.

    A guided kind needs its scale, a finite number: "cfg" alone is an error (it would silently
    sample at scale 0, the unconditional model). "none" and "unguided" take no scale (a scale of
    0, as in "none:0", is accepted) and give ("none", 0.0)."""
    if isinstance(guidance, str):
        guidance = _split_spec(guidance, kinds)
        if guidance == ("none", 0.0):
            return guidance
    kind, scale = guidance
    if kind not in kinds:
        raise ValueError(f"unknown guidance {kind!r}; expected one of {', '.join(kinds)} (or unguided)")
    if scale is None or not math.isfinite(float(scale)):
        raise ValueError(f"guidance {kind!r} needs a finite scale, got {scale!r}")
    return kind, float(scale)


def _split_spec(text: str, kinds: tuple[str, ...]) -> tuple[str, float]:
    """(kind, scale) of a spec's text; ("none", 0.0) for the unguided names (with no scale or scale 0)."""
    kind, colon, scale_text = (part.strip() for part in text.partition(":"))
    if is_unguided(kind):
        if colon and _number(scale_text) != 0:
            raise ValueError(f"guidance {text!r}: {kind!r} takes no scale")
        return ("none", 0.0)
    if not scale_text and kind in kinds:
        raise ValueError(
            f"guidance {text!r} needs a scale: {kind}:SCALE, e.g. {kind}:3.0 (or 'none' for unguided sampling)"
        )
    parsed = split_guidance(text)
    if parsed is not None:
        return parsed
    scale = _number(scale_text)
    if colon and scale is None:
        raise ValueError(f"guidance {text!r}: scale {scale_text!r} is not a number")
    if colon and not math.isfinite(scale):
        raise ValueError(f"guidance {kind!r} needs a finite scale, got {scale_text!r}")
    raise ValueError(f"guidance must be 'none' or 'KIND:SCALE' (e.g. 'cfg:3'), got {text!r}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
