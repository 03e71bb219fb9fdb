"""The one image decoder: any image file (or PIL image) -> uint8 RGB, by an explicit rule per PIL mode.

Every reader of image files in glide-eval (``metrics --gen/--ref`` folders, MS-COCO reference
images, ``regress`` previews, ``sample --image``) goes through `read_rgb` / `to_rgb`. A mode
not listed below is refused with an `ImageError` naming the file and the mode; an unreadable
or truncated file is an `ImageError` naming the file. Never silently clipped or guessed.

Rules (``v``: a pixel value as stored; results are uint8 per channel):

- ``RGB``: as stored. ``RGBX``: the padding byte dropped.
- ``L``: grey ``v`` copied to R, G and B. ``1``: black 0 / white 255, copied to R, G, B.
- ``P`` (palette) without transparency: the palette colour of each index.
- ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey, e.g. a 16-bit PNG): ``round(v / 257)``
  (65535 -> 255, exact for values that are multiples of 257, i.e. 8-bit data widened to 16).
- ``I`` (32-bit signed integer grey; old Pillow's mode for 16-bit PNGs): read as 16-bit, so
  values must lie in [0, 65535] (``round(v / 257)``); anything else is refused, with the range found.
- ``F`` (32-bit float grey): values must lie in [0, 1] and become ``round(255 * v)``; NaN or
  anything outside [0, 1] is refused (a float image has no standard range to guess).
- ``RGBA``, ``LA``, ``PA``, and ``P``, ``L`` or ``RGB`` with a transparency key (a PNG ``tRNS``
  chunk / GIF transparent index, through Pillow's RGBA conversion): composited onto a **white**
  background, ``round((c * a + 255 * (255 - a)) / 255)``. Fully opaque pixels keep their colour.
- ``CMYK``: Pillow's conversion, ``round((255 - c) * (255 - k) / 255)`` per channel (C for R,
  M for G, Y for B). It ignores any embedded ICC profile (no colour management), as Pillow's
  ``convert("RGB")`` and torchvision's readers do; JPEG's Adobe inverted CMYK is undone by
  Pillow's decoder.
- ``YCbCr``: Pillow's JPEG (ITU-R BT.601 full-range) conversion.
- Refused by name: ``La``, ``RGBa`` (premultiplied alpha), ``LAB``, ``HSV``, ``I;16S`` and any
  other mode.

Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF) are read at their first frame.
EXIF orientation is not applied (the pixels as stored, as Pillow and the reference
evaluators read them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA")
SUPPORTED_MODES = ("RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr", "I", "F") + GREY16_MODES + ALPHA_MODES
BACKGROUND = 255  # white, for compositing transparent pixels


class ImageError(ValueError):
    """An image file that cannot be read, or whose pixels have no defined 8-bit RGB reading."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] of the image file at ``path`` (rules in the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, str(path))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, EOFError) as e:
        raise ImageError(f"{path}: cannot read image: {e}") from None


def read_rgb_chw(path: str | os.PathLike) -> np.ndarray:
    """uint8 [3, H, W] of the image file at ``path``."""
    return np.ascontiguousarray(read_rgb(path).transpose(2, 0, 1))


def to_rgb_image(img, source: str = "<image>"):
    """A PIL RGB image of ``img`` by the same rules (for callers that resize with PIL)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    return Image.fromarray(to_rgb(img, source), "RGB")


def to_rgb(img, source: str = "<image>") -> np.ndarray:
    """uint8 [H, W, 3] of a PIL image (rules in the module docstring); ``source`` names it in errors."""
    mode = img.mode
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        return _composite(np.asarray(img.convert("RGBA")))
    if mode in ("RGB", "RGBX", "P", "CMYK", "YCbCr"):
        return np.asarray(img.convert("RGB") if mode != "RGB" else img, dtype=np.uint8)
    if mode in ("L", "1"):
        return _grey(np.asarray(img.convert("L"), dtype=np.uint8))
    if mode in GREY16_MODES:
        return _grey(_sixteen_to_8(_raw_grey16(img)))
    if mode == "I":
        return _grey(_int32_to_8(np.asarray(img, dtype=np.int64), source))
    if mode == "F":
        return _grey(_float_to_8(np.asarray(img, dtype=np.float64), source))
    if mode == "RGBA":
        return _composite(np.asarray(img, dtype=np.uint8))
    if mode in ("LA", "PA"):
        return _composite(np.asarray(img.convert("RGBA"), dtype=np.uint8))
    raise ImageError(
        f"{source}: image mode {mode!r} is not supported (supported: {', '.join(SUPPORTED_MODES)}); "
        "convert it to 8-bit RGB first"
    )


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def _raw_grey16(img) -> np.ndarray:
    """The stored 16-bit values as uint16, whatever the byte order of the mode."""
    order = ">" if img.mode == "I;16B" else "<" if img.mode in ("I;16", "I;16L") else "="
    raw = img.tobytes("raw", img.mode)
    return np.frombuffer(raw, dtype=np.dtype(order + "u2")).reshape(img.size[1], img.size[0])


def _sixteen_to_8(values: np.ndarray) -> np.ndarray:
    """round(v / 257) for v in [0, 65535], in integers (no ties: 257 is odd)."""
    return ((values.astype(np.int64) + 128) // 257).astype(np.uint8)


def _int32_to_8(values: np.ndarray, source: str) -> np.ndarray:
    lo, hi = int(values.min(initial=0)), int(values.max(initial=0))
    if lo < 0 or hi > 65535:
        raise ImageError(
            f"{source}: 32-bit integer image with values in [{lo}, {hi}]; only [0, 65535] "
            "(16-bit data) has a defined 8-bit reading"
        )
    return _sixteen_to_8(values)


def _float_to_8(values: np.ndarray, source: str) -> np.ndarray:
    if values.size and not np.isfinite(values).all():
        raise ImageError(f"{source}: float image with NaN or infinite pixels")
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if lo < 0.0 or hi > 1.0:
        raise ImageError(
            f"{source}: float image with values in [{lo:g}, {hi:g}]; only [0, 1] has a defined "
            "8-bit reading (round(255 * v))"
        )
    return np.rint(values * 255.0).astype(np.uint8)


def _composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 onto the white background: round((c a + 255 (255 - a)) / 255), in integers."""
    colour = rgba[..., :3].astype(np.int64)
    alpha = rgba[..., 3:4].astype(np.int64)
    total = colour * alpha + BACKGROUND * (255 - alpha)
    return ((2 * total + 255) // 510).astype(np.uint8)


def image_files(folder: str | os.PathLike, suffixes) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes`` (lower case, with dot), in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes and p.is_file())
