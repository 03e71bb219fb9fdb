"""One writer per run directory: an exclusive lock that names its holder.

`RunLock(folder)` takes an exclusive `flock` on ``folder/.lock`` (the `filelock` package) and
then writes who holds it (host, PID, start time, command) to ``folder/lock.json``. The kernel
drops a flock when its process ends, however it ends (SIGKILL included), so a lock never
outlives its holder; a ``lock.json`` left by a killed holder is only read while someone
holds the lock, and is then overwritten by the next holder. On filesystems shared between
nodes (NFS, Lustre mounted with ``flock``) the lock holds across nodes too; where the
filesystem has no flock, `filelock` falls back to a marker file it can break once stale.

Refused: `RunDirBusy` (a `SweepError`) whose message names the holder. With `wait=True`
the lock is awaited instead (logging the holder once).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from glide_eval.sweep.errors import SweepError
from storage import read_json, write_json
from storage.rundir import HOLDER_NAME, LOCK_NAME

POLL_S = 0.2


class RunDirBusy(SweepError):
    """Another process holds the run directory's lock."""


def holder_info(purpose: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "purpose": purpose,
    }


def describe_holder(holder: dict | None) -> str:
    if holder is None:
        return "holder not recorded yet"
    return f"host {holder.get('host')}, PID {holder.get('pid')}, since {holder.get('since')}: {holder.get('purpose')}"


class RunLock:
    def __init__(self, folder: str | Path, purpose: str = "sweep"):
        self.folder = Path(folder)
        self.purpose = purpose
        self._lock = FileLock(self.folder / LOCK_NAME)

    @property
    def holder_path(self) -> Path:
        return self.folder / HOLDER_NAME

    def holder(self, retry_s: float = 1.0) -> dict | None:
        """The recorded holder (retried briefly: a new holder writes it just after locking)."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                data = read_json(self.holder_path)
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def acquire(self, wait: bool = False, log: Callable[[str], None] | None = None) -> None:
        """Take the lock or raise `RunDirBusy` naming its holder; with `wait`, wait for it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            holder = describe_holder(self.holder())
            if not wait:
                raise RunDirBusy(
                    f"{self.folder} is in use by another process ({holder}). "
                    "Wait for it with --wait, or use another run.output_dir."
                ) from None
            if log is not None:
                log(f"waiting for {self.folder} ({holder})")
            self._lock.acquire(timeout=-1, poll_interval=POLL_S)
        write_json(self.holder_path, holder_info(self.purpose))

    def release(self) -> None:
        """Forget the holder, then unlock (in that order: the next holder's record survives)."""
        if not self._lock.is_locked:
            return
        try:
            self.holder_path.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
