"""Inputs of `glide-eval metrics`: folders of images, arr_0 .npz files, statistics / feature files, captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from glide_eval.data.coco import CROP_RULES, preprocess_image
from metrics import FeatureAccumulator, FeatureSets, ReferenceStats
from metrics.features import FORMAT as FEATURES_FORMAT
from metrics.images import ImageError, image_files, read_rgb_chw
from metrics.reference import FORMAT as REFERENCE_FORMAT


class InputError(ValueError):
    """An input file or folder that cannot be used; the message names it."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _read_protocol_image(path: Path, protocol: tuple[int, str]) -> np.ndarray:
    """A raw reference image through coco-reference's protocol: decode, crop, resize to uint8 [3, R, R]."""
    try:
        with Image.open(path) as img:
            img.load()
            return preprocess_image(img, protocol[0], protocol[1], str(path))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read image: {e}") from None


def _images_from_folder(folder: Path, batch_size: int, protocol: tuple[int, str] | None = None):
    """uint8 batches [B,3,H,W] of the folder's images in name order; a batch never mixes sizes.
    With ``protocol`` = (resolution, crop rule), every image goes through coco-reference's crop and resize."""
    files = image_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    batch = []
    for f in files:
        try:
            arr = read_rgb_chw(f) if protocol is None else _read_protocol_image(f, protocol)
        except ImageError as e:
            raise InputError(str(e)) from None
        if batch and (len(batch) == batch_size or batch[0].shape != arr.shape):
            yield torch.from_numpy(np.stack(batch))
            batch = []
        batch.append(arr)
    yield torch.from_numpy(np.stack(batch))


def _images_from_npz(path: Path, data, batch_size: int):
    arr = data["arr_0"]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"{path}: arr_0 must be uint8 [N, H, W, 3], got {arr.dtype} {arr.shape}")
    for i in range(0, len(arr), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(arr[i : i + batch_size].transpose(0, 3, 1, 2)))


def read_captions(path: Path) -> list[str]:
    if path.suffix in (".csv", ".parquet"):
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
        if "caption" not in df.columns:
            raise InputError(f"{path}: no 'caption' column")
        return df["caption"].astype(str).tolist()
    return [line for line in path.read_text().splitlines() if line.strip()]


def load_input(
    path: str,
    make_extractor,
    make_clip=None,
    captions=None,
    batch_size: int = 64,
    protocol: tuple[int, str] | None = None,
):
    """A stats/feature file as is, or a folder / arr_0 npz of images through the extractors (a folder's
    images through coco-reference's crop and resize when ``protocol`` = (resolution, crop) is given).
    ``make_extractor()`` gives one extractor (-> a `FeatureAccumulator`) or {role: extractor}
    (-> a `FeatureSets`, every batch decoded once and fed to each)."""
    p = Path(path)
    if p.is_dir():
        batches = _images_from_folder(p, batch_size, protocol)
    elif p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as data:
            fmt = json.loads(str(data["meta"])).get("format") if "meta" in data.files else None
            if fmt == REFERENCE_FORMAT:
                return ReferenceStats.load(p)
            if fmt == FEATURES_FORMAT:
                return FeatureAccumulator.load(p)
            if "arr_0" not in data.files:
                raise InputError(f"{p}: neither images (arr_0) nor a glide-eval statistics file")
            batches = list(_images_from_npz(p, data, batch_size))
    else:
        raise InputError(f"{p}: not a folder of images or an .npz file")
    clip = make_clip() if make_clip else None
    made = make_extractor()
    acc = FeatureSets.of(made, clip) if isinstance(made, dict) else FeatureAccumulator(made, clip)
    done = 0
    for images in batches:
        caps = None
        if clip is not None:
            caps = captions[done : done + images.shape[0]]
            if len(caps) != images.shape[0]:
                raise InputError(f"{p}: more images than captions ({len(captions)})")
        acc.add(images, caps)
        done += images.shape[0]
    if captions is not None and clip is not None and done != len(captions):
        raise InputError(f"{p}: {done} images but {len(captions)} captions")
    if acc.n_nan:
        raise InputError(f"{p}: {acc.n_nan} of {acc.n + acc.n_nan} images gave NaN/inf features")
    if protocol is not None:
        for one in acc.values() if isinstance(acc, FeatureSets) else [acc]:
            one.meta.update(resolution=protocol[0], crop=protocol[1], crop_rule=CROP_RULES[protocol[1]])
    return acc
