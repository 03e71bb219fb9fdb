"""storage: atomic writes (mode, temp names, nothing left behind), sha256, JSON hashes."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest

import storage as files


def test_atomic_writes_use_the_umask_mode_and_leave_no_temp_file(tmp_path):
    old = os.umask(0o027)
    try:
        files.atomic_write_text(tmp_path / "a" / "x.txt", "hello")
        files.save_npz(tmp_path / "a" / "y.npz", {"v": np.arange(3)})
    finally:
        os.umask(old)
    for name in ("x.txt", "y.npz"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o640  # 0666 & ~027, not mkstemp's 0600
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.txt", "y.npz"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path):
    target = tmp_path / "r.csv"
    files.atomic_write_text(target, "old")
    seen = []

    def writer(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        seen.extend(p.name for p in tmp_path.glob(files.TEMP_GLOB))  # how stale temp files are found
        assert seen == [os.path.basename(tmp)]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        files.atomic_write_with(target, writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
    # the temp file was named so that stale ones can be found: .r.csv.XXXXXXXX.tmp
    assert seen[0].startswith(".r.csv.") and seen[0].endswith(".tmp")


def test_sha256_helpers_match_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # several read chunks
    (tmp_path / "blob").write_bytes(data)
    assert files.sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    obj = {"b": [1, 2.5], "a": "x"}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert files.sha256_json(obj) == hashlib.sha256(text.encode()).hexdigest()


def test_cached_sha256_rehashes_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.pt"
    path.write_bytes(b"one")
    assert files.cached_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")  # another size: another cache key
    assert files.cached_sha256(path) == hashlib.sha256(b"two!").hexdigest()
    assert len(files.read_json(tmp_path / "cache" / "sha256.json")) == 2


def test_package_versions_lists_python_and_asked_packages():
    versions = files.package_versions(("numpy", "no-such-package-xyz"))
    assert versions["numpy"] == np.__version__ and "no-such-package-xyz" not in versions
    assert set(versions) == {"python", "numpy"}


def test_remove_temp_files_takes_only_temp_names(tmp_path):
    (tmp_path / "sub").mkdir()
    temps = [tmp_path / ".a.csv.k2j4h5g6.tmp", tmp_path / "sub" / ".b.npz.q1w2e3r4.tmp"]
    others = [tmp_path / "a.csv", tmp_path / "x.tmp", tmp_path / ".hidden", tmp_path / "sub" / "b.npz"]
    for p in temps + others:
        p.write_bytes(b"x")
    assert files.remove_temp_files(tmp_path) == [temps[0]]  # this folder only
    assert temps[1].exists()
    assert files.remove_temp_files(tmp_path, recursive=True) == [temps[1]]
    assert all(p.exists() for p in others) and not any(p.exists() for p in temps)
    assert files.remove_temp_files(tmp_path / "absent") == []
