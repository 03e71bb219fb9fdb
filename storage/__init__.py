"""The ground floor: file primitives and the run-directory format, each defined once.

- `storage.files`: atomic writes (temp file in the target's folder, fsync of the file and the
  folder, the umask's mode), JSON and npz writers, temp-file cleanup, writable-folder probe;
- `storage.hashing`: sha256 of a file (with a memo in $GLIDE_EVAL_CACHE/sha256.json) and of JSON;
- `storage.versions`: the installed versions of the packages that decide the numbers;
- `storage.errors`: the unreadable-file errors (`CorruptFileError`, `LOAD_ERRORS`, `DamagedFile`);
- `storage.rundir`: a sweep's run directory, the only module that spells its file names, key
  prefixes and schemas, with checked readers and writers (`RunFiles`).

It is a bottom package, beside `torchvision_compat`: every other package may import it, it
imports none of them.
"""

from __future__ import annotations

from storage.errors import LOAD_ERRORS, CorruptFileError, DamagedFile
from storage.files import (
    TEMP_GLOB,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
    fsync_dir,
    given_path,
    json_text,
    read_json,
    remove_temp_files,
    save_npz,
    unwritable_folder,
    write_json,
)
from storage.hashing import cache_dir, cached_sha256, sha256_file, sha256_json
from storage.versions import package_versions

__all__ = [
    "LOAD_ERRORS",
    "TEMP_GLOB",
    "CorruptFileError",
    "DamagedFile",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "cache_dir",
    "cached_sha256",
    "fsync_dir",
    "given_path",
    "json_text",
    "package_versions",
    "read_json",
    "remove_temp_files",
    "save_npz",
    "sha256_file",
    "sha256_json",
    "unwritable_folder",
    "write_json",
]
