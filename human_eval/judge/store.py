"""Append-only judgments CSV for a live judging session.

Every answer is one CSV record (one line: fields never hold line breaks) appended with a
single ``os.write`` on an ``O_APPEND`` descriptor, then fsynced, before the rater hears back. Each record carries a
``judgment_id`` (issued with the trial); on start the store reads the ids already in the
file, so an answer sent again after a crash or a restart is recognised and not written
twice. A record cut short by a kill mid-write (no final newline; never acknowledged) is
removed on start, and its rater's page sends it again.

Undo removes one record: the file is rewritten without it into a temp file, fsynced and
moved into place (``os.replace``), so a kill leaves the old or the new file, never a mix.
A threading lock serialises writers inside the process; an exclusive ``flock`` on
``FILE.lock`` keeps a second server off the same file.

The columns are those `glide-eval elo` reads (``human_eval.judgments``) plus extras it keeps.
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import io
import os
import threading
from pathlib import Path
from typing import Self

from storage import atomic_write_bytes, fsync_dir

COLUMNS = (
    "model_a",
    "model_b",
    "winner",
    "question",
    "prompt_id",
    "rater_id",
    "timestamp",
    "judgment_id",
    "left_model",
    "right_model",
    "image_a",
    "image_b",
    "seed",
    "caption",
)
WINNERS = ("a", "b", "tie")


class StoreError(RuntimeError):
    """The judgments file cannot be used (the message names it and says why)."""


def utc_timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _record_bytes(values: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode("utf-8")


class JudgmentStore:
    """The judgments of one session; see the module docstring. Use as a context manager or
    call `close` to release the file lock."""

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...] = COLUMNS):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.repaired_bytes = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(
                f"{self.path}: another judging server is writing this file (lock {self.path}.lock is held)"
            ) from None
        try:
            self._rows = self._open_existing() if self.path.exists() else self._create()
        except BaseException:
            self.close()
            raise
        self._ids = {r["judgment_id"] for r in self._rows}

    # ------------------------------------------------------------ opening

    def _create(self) -> list[dict]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, _record_bytes(list(self.columns)))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)
        return []

    def _open_existing(self) -> list[dict]:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a record cut short by a kill
            keep = data.rfind(b"\n") + 1
            if keep == 0:
                raise StoreError(f"{self.path}: no complete header line; remove the file to start a new one")
            self.repaired_bytes = len(data) - keep
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            data = data[:keep]
        if not data:
            self.path.unlink()
            return self._create()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoreError(f"{self.path}: not UTF-8 (byte {e.start}); is it a judgments file of this tool?") from None
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if tuple(rows[0]) != self.columns:
            raise StoreError(
                f"{self.path}:1: header {','.join(rows[0])!r} is not this tool's "
                f"({','.join(self.columns)}); write to a new --out file"
            )
        out, seen = [], set()
        for k, fields in enumerate(rows[1:], start=2):
            if len(fields) != len(self.columns):
                raise StoreError(f"{self.path}: record {k}: {len(fields)} fields, expected {len(self.columns)}")
            row = dict(zip(self.columns, fields))
            if row["judgment_id"] in seen:
                raise StoreError(f"{self.path}: record {k}: judgment_id {row['judgment_id']} appears twice")
            seen.add(row["judgment_id"])
            out.append(row)
        return out

    # ------------------------------------------------------------ writing

    def append(self, row: dict) -> bool:
        """Write one judgment (a dict with every column) and fsync it. Returns False, writing
        nothing, when a judgment with this ``judgment_id`` is already in the file."""
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise ValueError(f"judgment lacks column(s) {', '.join(missing)}")
        values = [str(row[c]) for c in self.columns]
        if any(ch in v for v in values for ch in "\r\n"):
            raise ValueError("judgment fields must not contain line breaks (one record = one line)")
        record = _record_bytes(values)
        with self._lock:
            if row["judgment_id"] in self._ids:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                written = os.write(fd, record)
                if written != len(record):
                    raise StoreError(f"{self.path}: short write ({written} of {len(record)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ids.add(row["judgment_id"])
            self._rows.append(dict(zip(self.columns, values)))
        return True

    def remove(self, judgment_id: str, rater_id: str, max_age_s: float) -> dict:
        """Undo: remove ``rater_id``'s latest judgment if it is ``judgment_id`` and at most
        ``max_age_s`` old. Returns the removed row; raises ValueError saying why not."""
        with self._lock:
            mine = [k for k, r in enumerate(self._rows) if r["rater_id"] == rater_id]
            if not mine or self._rows[mine[-1]]["judgment_id"] != judgment_id:
                raise ValueError(f"judgment {judgment_id} is not rater {rater_id!r}'s latest judgment")
            k = mine[-1]
            age = (datetime.datetime.now(datetime.UTC) - parse_timestamp(self._rows[k]["timestamp"])).total_seconds()
            if age > max_age_s:
                raise ValueError(f"judgment {judgment_id} is {age:.0f} s old; undo is allowed for {max_age_s:g} s")
            rows = self._rows[:k] + self._rows[k + 1 :]
            self._rewrite(rows)
            removed = self._rows[k]
            self._rows = rows
            self._ids.discard(judgment_id)
            return removed

    def _rewrite(self, rows: list[dict]) -> None:
        data = _record_bytes(list(self.columns)) + b"".join(_record_bytes([r[c] for c in self.columns]) for r in rows)
        atomic_write_bytes(self.path, data)

    # ------------------------------------------------------------ reading

    def rows(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._rows]

    def __contains__(self, judgment_id: str) -> bool:
        return judgment_id in self._ids

    def __len__(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
