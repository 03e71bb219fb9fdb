"""Checks that generated images and reference statistics can be compared at all.

`resolution_mismatch(gen, ref)` says (in one sentence) when the generated images' size differs from
the resolution the reference statistics were made at: FID and precision/recall across resolutions
measure the resize, not the model (64px samples against 256px MS-COCO statistics give FID ~358).
Sizes come from ``meta["image_sizes"]`` (a `FeatureAccumulator` fed images) and
``meta["resolution"]`` (reference statistics from ``coco-reference`` or a sweep); when either side
does not record its size, nothing can be said and None is returned.
"""

from __future__ import annotations


def recorded_sizes(side) -> list[tuple[int, int]] | None:
    """The distinct (H, W) image sizes a feature state or reference statistics file records, or None."""
    meta = getattr(side, "meta", None) or {}
    if meta.get("image_sizes"):
        return sorted({(int(h), int(w)) for h, w in meta["image_sizes"]})
    resolution = meta.get("resolution")
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        return [(resolution, resolution)]
    return None


def _text(sizes: list[tuple[int, int]]) -> str:
    return ", ".join(f"{h}px" if h == w else f"{h}x{w}px" for h, w in sizes)


def resolution_mismatch(gen, ref) -> str | None:
    """None when the sizes agree (or are not recorded); else what differs, in one sentence."""
    gen_sizes, ref_sizes = recorded_sizes(gen), recorded_sizes(ref)
    if gen_sizes is None or ref_sizes is None or set(gen_sizes) == set(ref_sizes):
        return None
    return (
        f"the generated images are {_text(gen_sizes)} but the reference was made at {_text(ref_sizes)}; "
        "FID and precision/recall across resolutions measure the resize, not the model"
    )
