"""Atomic writes, JSON and npz files, and the cleanup of killed writes.

Every file the project writes goes through `atomic_write_with` (or a wrapper of it): the
data goes to a temporary file in the target's folder, named ``.NAME.XXXXXXXX.tmp``
(`TEMP_PREFIX` + name + random + `TEMP_SUFFIX`, so stale ones can be found with
`TEMP_GLOB` and removed), which is fsynced, given the mode a plain ``open()`` would give
(0666 minus the umask, not mkstemp's 0600), moved into place with ``os.replace`` and the
folder fsynced, so a crash at any point leaves the old file or the new one, never a mix.
A process killed mid-write leaves its temporary file; `remove_temp_files` deletes them, and
is called only by a process that holds the lock of the folder (so no live writer owns them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
TEMP_GLOB = f"{TEMP_PREFIX}*{TEMP_SUFFIX}"


def file_mode() -> int:
    """The mode `open()` gives a new file: 0666 minus the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder (after a rename in it); a platform without directory fds is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], object]) -> None:
    """Call `writer(tmp_path)` to write the file, then fsync it and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_temp_files(folder: str | os.PathLike, pattern: str = TEMP_GLOB, recursive: bool = False) -> list[Path]:
    """Delete the temporary files of `atomic_write_with` that match `pattern` in `folder`
    (and its subfolders when `recursive`); the paths removed. Call it only while holding a
    lock that every writer of these files holds too: a live writer's file would vanish."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(pattern) if recursive else folder.glob(pattern)):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_text(obj) -> str:
    """The text `write_json` writes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json_text(obj))


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def save_npz(path: str | os.PathLike, arrays: dict, compress: bool = True) -> None:
    """np.savez_compressed (np.savez when not `compress`), written atomically."""
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def unwritable_folder(path: str | os.PathLike) -> str | None:
    """None when `path` is (or can be made) a folder this process can create files in; else why not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot write files in the folder {path} ({e.strerror or e})"
    return None


def given_path(
    value: str | os.PathLike | None,
    env: str,
    what: str,
    missing: str,
    folder: bool = False,
    error: type[Exception] = FileNotFoundError,
) -> Path:
    """`value`, else $`env`, as an existing file (a folder when `folder`); else `error`: `missing` when
    neither is set, "`what` not found: PATH" when it does not exist."""
    path = value or os.environ.get(env)
    if not path:
        raise error(missing)
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise error(f"{what} not found: {path}")
    return path
