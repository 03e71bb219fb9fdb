"""The ways the file-check tests damage a file: truncated to 100 bytes, one byte flipped, deleted."""

from __future__ import annotations

import os
from pathlib import Path


def truncate(path: Path) -> None:
    os.truncate(path, 100)


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


DAMAGE = {"truncate": truncate, "flip": flip, "delete": delete}
