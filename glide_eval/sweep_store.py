"""Files of a sweep run directory, all written atomically (temp file + os.replace).

    RUN_DIR/config.toml                 resolved config (rerun with it to resume)
    RUN_DIR/run.json                    config hash, provenance, captions hash
    RUN_DIR/captions.json               the N captions, by sample index
    RUN_DIR/shards/SETTING/NNNNN.npz    per-sample features, NaN counts, previews
    RUN_DIR/shards/SETTING/NNNNN.json   the shard's record: key, sha256 of the npz, timings
    RUN_DIR/images/SETTING/...          only with --save-images
    RUN_DIR/manifest.json               every finished shard and its sha256 (after merge)
    RUN_DIR/previews.npz                preview images per setting (after merge)
    RUN_DIR/results.parquet, .csv       one row per setting (after merge)

A shard counts as finished only when its record exists, names the expected key and the
npz on disk has the recorded sha256. The record is written after the npz, so a process
killed at any point leaves either a finished shard or one that is redone.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from glide_eval.sweep_components import sha256_file

FEATURE_PREFIX = "feat__"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp makes 0600


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def atomic_write_with(path: Path, writer) -> None:
    """Call `writer(tmp_path)` then move the file into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def shard_paths(run_dir: Path, setting_name: str, index: int) -> tuple[Path, Path]:
    base = Path(run_dir) / "shards" / setting_name / f"{index:05d}"
    return base.with_suffix(".npz"), base.with_suffix(".json")


def finished_record(run_dir: Path, setting_name: str, index: int, key: str,
                    need_images: str = "none") -> dict | None:
    """The shard's record if the shard is finished and intact, else None."""
    npz, record_path = shard_paths(run_dir, setting_name, index)
    if not record_path.is_file() or not npz.is_file():
        return None
    try:
        record = read_json(record_path)
    except (json.JSONDecodeError, OSError):
        return None
    if record.get("key") != key:
        return None
    if need_images != "none" and record.get("save_images") != need_images:
        return None
    if sha256_file(npz) != record.get("sha256"):
        return None
    return record


def write_shard(run_dir: Path, setting_name: str, index: int, arrays: dict, record: dict) -> dict:
    npz, record_path = shard_paths(run_dir, setting_name, index)
    save_npz(npz, arrays)
    record = dict(record, sha256=sha256_file(npz), file=str(npz.relative_to(run_dir)))
    write_json(record_path, record)
    return record


def load_shard(run_dir: Path, setting_name: str, index: int) -> dict:
    npz, _ = shard_paths(run_dir, setting_name, index)
    with np.load(npz) as f:
        return {k: f[k] for k in f.files}


def save_images(run_dir: Path, setting_name: str, index: int, sample_ids, images, fmt: str) -> None:
    folder = Path(run_dir) / "images" / setting_name
    if fmt == "npz":  # one file per batch, named by its first sample id
        save_npz(folder / f"{index:05d}_{int(sample_ids[0]):06d}.npz",
                 {"sample_ids": np.asarray(sample_ids), "images": images})
        return
    from PIL import Image

    for sid, img in zip(sample_ids, images):
        def writer(tmp, img=img):
            Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(tmp, format="PNG")

        atomic_write_with(folder / f"{int(sid):06d}.png", writer)
