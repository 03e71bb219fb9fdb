"""Catalog images as raters receive them: read only from regular files inside their run
directory, decoded to pixels, and sent re-encoded so that nothing but the pixels themselves
can tell one setting from another.

Reading (`load_pixels`): the file's real path must lie inside the entry's run directory (a
symlink out of it is refused), the opened file must be a regular file with one link (a hard
link can make any file of the machine, e.g. the session's secrets, look like an image of the
run: refused whatever it points to), and it must be the file the path names (no swap between
the check and the open). Its bytes must decode as an image: a PNG (any mode, converted to
RGB) or entry ``index`` of an npz's ``images`` array ([3, H, W] uint8, read without pickle).

Sending (`encode`): an RGB PNG with zlib level 0 (stored blocks) and no metadata, so its
length is a function of width and height alone (`encoded_length`): a compressed image's size
reveals how much detail it has, and so, often, its setting.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from human_eval.judge.catalog import Catalog, ImageEntry

MAX_PIXELS = 4096 * 4096  # larger images are refused (decompression bombs)
MAX_FILE_BYTES = 512 << 20


class ImageRefused(Exception):
    """An image that is not served; the message names the file and says why."""


def _read_inside(entry: ImageEntry) -> bytes:
    root = os.path.realpath(entry.root)
    real = os.path.realpath(entry.path)
    if os.path.commonpath([root, real]) != root:
        raise ImageRefused(f"{entry.path}: its real path {real} is outside the run directory {root}")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ImageRefused(f"{entry.path}: cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageRefused(f"{entry.path}: not a regular file")
        if st.st_nlink != 1:
            raise ImageRefused(f"{entry.path}: has {st.st_nlink} hard links (only files with one link are served)")
        try:
            named = os.stat(real, follow_symlinks=False)
        except OSError as e:
            raise ImageRefused(f"{entry.path}: cannot stat: {e.strerror or e}") from None
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            raise ImageRefused(f"{entry.path}: the file changed while it was opened")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageRefused(f"{entry.path}: {st.st_size} bytes; larger than {MAX_FILE_BYTES}")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = None
            return f.read()
    except OSError as e:
        raise ImageRefused(f"{entry.path}: cannot read: {e.strerror or e}") from None
    finally:
        if fd is not None:
            os.close(fd)


def _decode_png(data: bytes, entry: ImageEntry) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ImageRefused(f"{entry.path}: a {image.format} file, not a PNG")
            if image.width * image.height > MAX_PIXELS:
                raise ImageRefused(f"{entry.path}: {image.width}x{image.height} pixels; at most {MAX_PIXELS}")
            return np.asarray(image.convert("RGB"))
    except ImageRefused:
        raise
    except Exception as e:  # PIL raises many kinds for a broken file
        raise ImageRefused(f"{entry.path}: not a readable PNG: {e}") from None


def _npz_images(data: bytes, entry: ImageEntry) -> np.ndarray:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            images = f["images"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise ImageRefused(f"{entry.path}: not a readable npz with an 'images' array: {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ImageRefused(f"{entry.path}: 'images' is {images.dtype} {images.shape}, expected uint8 [N, 3, H, W]")
    if images.shape[2] * images.shape[3] > MAX_PIXELS:
        raise ImageRefused(f"{entry.path}: {images.shape[3]}x{images.shape[2]} pixels; at most {MAX_PIXELS}")
    return images


def _npz_entry(images: np.ndarray, entry: ImageEntry) -> np.ndarray:
    if not 0 <= entry.index < len(images):
        raise ImageRefused(f"{entry.path}: no image {entry.index} ('images' holds {len(images)})")
    return np.ascontiguousarray(images[entry.index].transpose(1, 2, 0))


def load_pixels(entry: ImageEntry) -> np.ndarray:
    """[H, W, 3] uint8 pixels of one catalog image; ImageRefused says why not (see the module docstring)."""
    data = _read_inside(entry)
    return _decode_png(data, entry) if entry.index is None else _npz_entry(_npz_images(data, entry), entry)


def encode(pixels: np.ndarray) -> bytes:
    """An RGB PNG of ``pixels`` ([H, W, 3] uint8) whose length depends only on H and W."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def encoded_length(width: int, height: int) -> int:
    """Length of `encode` for a width x height image (the same for every image of that size)."""
    return len(encode(np.zeros((height, width, 3), np.uint8)))


@dataclass
class CheckedCatalog:
    catalog: Catalog
    refused: list[str]  # one message per image left out


def check_catalog(catalog: Catalog, progress=None) -> CheckedCatalog:
    """``catalog`` without the images `load_pixels` refuses (every image is read and decoded once,
    an npz once for all its images); ValueError when fewer than two settings with a common prompt
    are left."""
    refused, images = [], {}
    npz: dict[Path, np.ndarray | ImageRefused] = {}  # the last npz read (batches are listed in order)
    entries = [(m, p, e) for m in catalog.models for p, e in sorted(catalog.images[m].items())]
    for model, prompt, entry in entries if progress is None else progress(entries):
        try:
            if entry.index is None:
                load_pixels(entry)
            else:
                if entry.path not in npz:
                    npz.clear()
                    try:
                        npz[entry.path] = _npz_images(_read_inside(entry), entry)
                    except ImageRefused as e:
                        npz[entry.path] = e
                if isinstance(npz[entry.path], ImageRefused):
                    raise npz[entry.path]
                _npz_entry(npz[entry.path], entry)
        except ImageRefused as e:
            refused.append(str(e))
            continue
        images.setdefault(model, {})[prompt] = entry
    models = [m for m in catalog.models if m in images]
    checked = Catalog(models, images, catalog.captions, catalog.seed) if len(models) >= 2 else None
    if checked is None or not checked.pair_prompts():
        raise ValueError(
            f"fewer than two settings have readable images of a common prompt ({len(refused)} refused"
            + (f"; first: {refused[0]}" if refused else "")
            + ")"
        )
    return CheckedCatalog(checked, refused)
