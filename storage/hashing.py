"""sha256 of files (with a memo keyed by path, size and mtime) and of JSON values."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from storage.files import read_json, write_json


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    """sha256 of the canonical JSON text of `obj` (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path:
    """$GLIDE_EVAL_CACHE, else ~/.cache/glide-eval."""
    return Path(os.environ.get("GLIDE_EVAL_CACHE", Path.home() / ".cache" / "glide-eval"))


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered by (path, size, mtime) in `cache_dir()`/sha256.json."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = cache_dir() / "sha256.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = read_json(cache_file)
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_file(path)
        try:
            write_json(cache_file, cache)
        except OSError:
            pass  # a read-only home only costs re-hashing next time
    return cache[key]
