"""MS-COCO: captions to generate from, and the real images FID is measured against.

Layout read from a folder (flag or env ``GLIDE_EVAL_COCO``), the standard one::

    annotations/captions_val2014.json   val2014/COCO_val2014_000000000042.jpg ...
    annotations/captions_val2017.json   val2017/000000000139.jpg ...

(2014 is preferred when both are there, as in the GLIDE paper's zero-shot MS-COCO numbers.)

Reference images: decoded in a thread pool, converted to RGB by `metrics.images` (its rule
per PIL mode: 16-bit grey scaled, alpha composited onto white, CMYK, palette...),
centre-cropped to a square, then resized ADM-style (PIL BOX halving while the image
is at least twice the target, then BICUBIC) to uint8 ``[3, R, R]``. ``crop="adm"`` instead
follows guided-diffusion's ``center_crop_arr`` (resize the short side, then crop).
Unreadable files are reported by name, never skipped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metrics.images import ImageError, to_rgb_image
from metrics.reference import build_reference, cached_reference, expected_meta, ids_sha256
from storage import atomic_write_with, cache_dir, given_path

COCO_ENV = "GLIDE_EVAL_COCO"
SPLITS = ("val2014", "val2017")
CROP_RULES = {
    "center": "center square crop, then BOX halving while >= 2x target, then BICUBIC (PIL)",
    "adm": "guided-diffusion center_crop_arr: BOX halving, BICUBIC resize of short side, then center crop",
}


class CocoError(RuntimeError):
    """The MS-COCO folder is incomplete, or some of its files cannot be read."""


@dataclass(frozen=True)
class CocoLayout:
    root: Path
    split: str
    captions_json: Path
    image_dir: Path


def find_coco(root=None, split: str | None = None) -> CocoLayout:
    """Locate captions json and image folder under `root` (or $GLIDE_EVAL_COCO)."""
    missing = f"MS-COCO folder not given: pass --coco or set {COCO_ENV}"
    root = given_path(root, COCO_ENV, "MS-COCO folder", missing, folder=True, error=CocoError)
    for s in [split] if split else SPLITS:
        captions = root / "annotations" / f"captions_{s}.json"
        if captions.is_file():
            return CocoLayout(root, s, captions, root / s)
    wanted = " or ".join(f"annotations/captions_{s}.json" for s in ([split] if split else SPLITS))
    raise CocoError(f"{root}: missing {wanted}")


def load_annotations(layout: CocoLayout) -> tuple[pd.DataFrame, dict[int, str]]:
    """(captions: image_id, caption_id, caption; sorted by caption id) and {image_id: file_name}."""
    try:
        data = json.loads(layout.captions_json.read_text())
        anns = data["annotations"]
        files = {int(im["id"]): im["file_name"] for im in data["images"]}
        df = pd.DataFrame(
            {
                "image_id": [int(a["image_id"]) for a in anns],
                "caption_id": [int(a["id"]) for a in anns],
                "caption": [" ".join(str(a["caption"]).split()) for a in anns],
            }
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CocoError(f"{layout.captions_json}: not a COCO captions file ({type(e).__name__}: {e})") from e
    return df.sort_values("caption_id", kind="stable").reset_index(drop=True), files


def sample_caption_records(root=None, n: int = 30000, seed: int = 0, split: str | None = None) -> pd.DataFrame:
    """A deterministic seeded sample of n (image_id, caption_id, caption) rows, without
    replacement, in caption-id order."""
    captions, _ = load_annotations(find_coco(root, split))
    if n > len(captions):
        raise CocoError(f"asked for {n} captions but the annotations hold {len(captions)}")
    idx = np.sort(np.random.default_rng(seed).choice(len(captions), size=n, replace=False))
    out = captions.iloc[idx].reset_index(drop=True)
    out.insert(0, "sample_id", np.arange(n))
    return out


def sample_captions(root=None, n: int = 30000, seed: int = 0, split: str | None = None) -> list[str]:
    """The captions of `sample_caption_records`, in order."""
    return sample_caption_records(root, n, seed, split)["caption"].tolist()


def save_table(df: pd.DataFrame, path) -> None:
    """CSV or parquet (by suffix), written atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        atomic_write_with(path, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        atomic_write_with(path, lambda tmp: df.to_csv(tmp, index=False))


def read_ids(path) -> list[int]:
    """Image ids, one per line (blank lines and '#' comments ignored)."""
    ids = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise CocoError(f"{path}:{lineno}: not an image id: {line!r}") from None
    return ids


def preprocess_image(img, resolution: int, crop: str = "center", source: str = "<image>") -> np.ndarray:
    """PIL image -> uint8 [3, R, R] by the named crop rule (see CROP_RULES); colours decoded by
    `metrics.images.to_rgb` (``source`` names the image in its errors)."""
    from PIL import Image

    img = to_rgb_image(img, source)
    if crop == "center":
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        while min(img.size) >= 2 * resolution:
            img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
        img = img.resize((resolution, resolution), resample=Image.BICUBIC)
        arr = np.asarray(img)
    elif crop == "adm":
        while min(img.size) >= 2 * resolution:
            img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
        scale = resolution / min(img.size)
        img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
        arr = np.asarray(img)
        top, left = (arr.shape[0] - resolution) // 2, (arr.shape[1] - resolution) // 2
        arr = arr[top : top + resolution, left : left + resolution]
    else:
        raise ValueError(f"unknown crop rule {crop!r} (known: {', '.join(CROP_RULES)})")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _load(path: Path, resolution: int, crop: str):
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess_image(img, resolution, crop, str(path)), None
    except ImageError as e:
        return None, str(e)
    except (OSError, ValueError, SyntaxError) as e:
        return None, f"{path}: {e}"


def image_ids(layout: CocoLayout, ids=None) -> list[int]:
    """The given ids (checked against the annotations) or every image of the split, sorted."""
    _, files = load_annotations(layout)
    if ids is None:
        return sorted(files)
    missing = [i for i in ids if i not in files]
    if missing:
        raise CocoError(f"{len(missing)} image ids not in {layout.captions_json}: {missing[:10]}")
    return list(ids)


def reference_batches(
    layout: CocoLayout,
    resolution: int,
    ids=None,
    crop: str = "center",
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
) -> Iterator:
    """uint8 torch batches [B, 3, R, R] of the reference images, in id order."""
    import torch
    from tqdm import tqdm

    _, files = load_annotations(layout)
    ids = image_ids(layout, ids)
    paths = [layout.image_dir / files[i] for i in ids]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise CocoError(
            f"{len(absent)} images missing from {layout.image_dir}: {', '.join(p.name for p in absent[:10])}"
        )
    errors = []
    starts = range(0, len(paths), batch_size)
    with (
        ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=len(paths), desc=f"COCO {layout.split} @{resolution}", disable=not progress) as bar,
    ):

        def submit(start):  # decode one batch ahead of the consumer
            return [pool.submit(_load, p, resolution, crop) for p in paths[start : start + batch_size]]

        pending = submit(starts[0]) if starts else []
        for i in range(len(starts)):
            results = [f.result() for f in pending]
            pending = submit(starts[i + 1]) if i + 1 < len(starts) else []
            errors += [err for _, err in results if err]
            bar.update(len(results))
            if not errors:
                yield torch.from_numpy(np.stack([arr for arr, _ in results]))
    if errors:
        raise CocoError(f"{len(errors)} unreadable images:\n" + "\n".join(errors[:20]))


def reference_meta(layout: CocoLayout, resolution: int, ids: list[int], crop: str) -> dict:
    return {
        "dataset": f"coco-{layout.split}",
        "resolution": resolution,
        "crop": crop,
        "crop_rule": CROP_RULES[crop],
        "image_ids_sha256": ids_sha256(ids),
        "n_images": len(ids),
    }


def default_reference_path(layout: CocoLayout, resolution: int, extractor_name: str, crop: str) -> Path:
    return cache_dir() / f"coco-{layout.split}-{resolution}-{crop}-{extractor_name}.npz"


def coco_reference(
    extractor,
    root=None,
    resolution: int = 256,
    ids=None,
    out=None,
    crop: str = "center",
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    log=print,
    rebuild_unreadable: bool = True,
):
    """Cached reference statistics of MS-COCO validation images (`metrics.ReferenceStats`).

    Reuses `out` only when its metadata (extractor + weights sha256, resolution, crop rule,
    image-id list hash, package versions) matches; otherwise recomputes and rewrites it. An
    unreadable `out` is rebuilt too, unless `rebuild_unreadable` is False (metrics.CorruptFileError)."""
    layout = find_coco(root)
    ids = image_ids(layout, ids)
    meta = reference_meta(layout, resolution, ids, crop)
    out = Path(out) if out else default_reference_path(layout, resolution, extractor.name, crop)

    def build():
        return build_reference(
            reference_batches(layout, resolution, ids, crop, batch_size, workers, progress), extractor, meta
        )

    stats = cached_reference(
        out, expected_meta(extractor, **meta), build, log=log, rebuild_unreadable=rebuild_unreadable
    )
    return stats, out
