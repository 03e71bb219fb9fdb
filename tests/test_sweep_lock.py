"""One writer per run directory (issue 18, item 1) and torchrun workers that end with their launcher (item 5).

The lock's truth is the kernel's: a flock held by another process (or another open file in
this one) refuses us; a SIGKILLed holder's lock is gone. Each test checks what a user sees:
which process ran, the refusal naming the holder's PID, how long --wait waited.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_sweep import env_with_tests_on_path, metric_table, write_config

from glide_eval.cli import main
from glide_eval.sweep import lock as lock_module
from glide_eval.sweep.config import load_config
from glide_eval.sweep.launcher import exit_with_launcher
from glide_eval.sweep.lock import HOLDER_NAME, RunDirBusy, RunLock
from glide_eval.sweep.run import run_sweep

HOLD = """
import sys
from glide_eval.sweep.lock import RunLock
lock = RunLock(sys.argv[1], "test holder")
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold until told (or killed)
lock.release()
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """A process that holds `folder`'s lock until a line reaches its stdin (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        env=env_with_tests_on_path(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def let_go(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def quiet(_msg: str) -> None:
    pass


def sweep_cmd(path: Path, torchrun_port: int | None = None) -> list[str]:
    """`glide-eval sweep PATH --no-progress` as a command; under torchrun (2 processes) given a port."""
    launcher = (
        []
        if torchrun_port is None
        else ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(torchrun_port)]
    )
    return [sys.executable, *launcher, "-m", "glide_eval", "sweep", str(path), "--no-progress"]


def start_sweep(path: Path, cwd: Path, torchrun_port: int | None = None, **popen) -> subprocess.Popen:
    """The sweep of `path` started in `cwd` with the tests importable; `popen`: pipes and session."""
    return subprocess.Popen(sweep_cmd(path, torchrun_port), env=env_with_tests_on_path(), cwd=cwd, **popen)


def sweep_to_the_end(
    path: Path, cwd: Path, torchrun_port: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """The sweep of `path` run in `cwd` until it exits, its output captured as text."""
    return subprocess.run(
        sweep_cmd(path, torchrun_port),
        env=env_with_tests_on_path(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_second_sweep_is_refused_naming_the_holder(tmp_path):
    config = load_config(write_config(tmp_path))
    holder = RunLock(config.output_dir, "another sweep")  # its own open file: conflicts like another process
    holder.acquire()
    try:
        with pytest.raises(RunDirBusy, match=rf"host {socket.gethostname()}, PID {os.getpid()}, since .*another sweep"):
            run_sweep(config, progress=False, log=quiet)
        assert not (config.output_dir / "run.json").exists()  # refused before touching anything
    finally:
        holder.release()
    assert not (config.output_dir / HOLDER_NAME).exists()  # released: the holder record goes first
    run_sweep(config, progress=False, log=quiet)
    assert not (config.output_dir / HOLDER_NAME).exists()


def test_a_sigkilled_holder_does_not_block_the_next_run(tmp_path):
    config = load_config(write_config(tmp_path))
    proc = hold_lock(config.output_dir)
    record = json.loads((config.output_dir / HOLDER_NAME).read_text())
    assert record["pid"] == proc.pid and record["purpose"] == "test holder"
    with pytest.raises(RunDirBusy, match=f"PID {proc.pid}"):
        run_sweep(config, progress=False, log=quiet)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (config.output_dir / HOLDER_NAME).exists()  # its record stays behind, its lock does not
    summary = run_sweep(config, progress=False, log=quiet)
    assert summary["shards_run"] == 16


def test_wait_waits_for_the_holder_then_runs(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    out = tmp_path / "out"
    proc = hold_lock(out)
    refused = CliRunner().invoke(main, ["sweep", str(path), "--no-progress"])
    assert refused.exit_code == 1 and f"PID {proc.pid}" in refused.output and "--wait" in refused.output
    assert "Traceback" not in refused.output
    # the holder lets go once the waiting sweep has found the lock taken (no fixed sleep: any load)
    waiting = threading.Event()
    describe = lock_module.describe_holder
    monkeypatch.setattr(lock_module, "describe_holder", lambda info: (waiting.set(), describe(info))[1])
    results_at_release = []

    def release_later():
        waiting.wait(timeout=300)
        results_at_release.append((out / "results.parquet").exists())
        let_go(proc)

    threading.Thread(target=release_later, daemon=True).start()
    waited = CliRunner().invoke(main, ["sweep", str(path), "--no-progress", "--wait"])
    proc.wait()
    assert waited.exit_code == 0, waited.output
    assert f"PID {proc.pid}" in waited.output and "waiting for" in waited.output
    # it ran only after the holder let go: no results when it did, results now (no clocks compared)
    assert proc.returncode == 0 and results_at_release == [False]
    assert len(pd.read_parquet(out / "results.parquet")) == 4


@pytest.mark.slow
def test_two_sweeps_racing_on_a_fresh_directory_one_runs(tmp_path):
    """Two configs (cfg 1,3 vs 1,5) on one fresh directory, started together: exactly one runs;
    the other exits 1 naming the winner's PID; the results are the winner's config's alone."""
    paths = [write_config(tmp_path, "a.toml", delay=0.2), write_config(tmp_path, "b.toml", cfg="[1.0, 5.0]", delay=0.2)]
    procs = [start_sweep(p, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in paths]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, outputs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"PID {procs[winner].pid}" in outputs[loser][1] and "is in use by another process" in outputs[loser][1]
    assert "Traceback" not in outputs[loser][1]
    settings = list(pd.read_parquet(tmp_path / "out" / "results.parquet")["setting"])
    assert settings == ["unguided", "cfg-1", ["cfg-3", "cfg-5"][winner], "clip-2"]
    shard_folders = sorted(p.name for p in (tmp_path / "out" / "shards").iterdir())
    assert shard_folders == sorted(["unguided", "cfg-1", ["cfg-3", "cfg-5"][winner], "clip-2"])
    # and the winner's numbers are its config's: equal to a run of it alone
    alone = tmp_path / "alone"
    alone.mkdir()
    run_sweep(load_config(write_config(alone, cfg=["[1.0, 3.0]", "[1.0, 5.0]"][winner])), progress=False, log=quiet)
    pd.testing.assert_frame_equal(metric_table(tmp_path / "out"), metric_table(alone / "out"))


# ---------------------------------------------------------------- workers end with their launcher

ORPHAN = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=dict(os.environ, TORCHELASTIC_RUN_ID="t"))
print(child.pid, flush=True)
child.wait()
"""
WORKER = """
import time
from glide_eval.sweep.launcher import exit_with_launcher
assert exit_with_launcher()
print("armed", flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (it runs no more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_ends_when_its_launcher_is_sigkilled(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, WORKER], env=env_with_tests_on_path(), stdout=subprocess.PIPE, text=True
    )
    worker = int(launcher.stdout.readline())
    try:
        assert launcher.stdout.readline().strip() == "armed"  # the worker has asked for the signal
        assert not gone(worker)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        assert wait_gone([worker], 5.0), "the worker outlived its launcher"
    finally:
        if not gone(worker):
            os.kill(worker, signal.SIGKILL)
    assert exit_with_launcher(environ={}) is False  # not under torchrun: nothing to do


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_workers_end_when_torchrun_is_sigkilled(tmp_path):
    path = write_config(tmp_path, n=16, delay=0.5)
    torchrun = start_sweep(
        path,
        tmp_path,
        31500 + os.getpid() % 1000,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    workers = []
    try:
        shards = tmp_path / "out" / "shards"
        deadline = time.monotonic() + 120
        while not list(shards.glob("*/*.json")) and time.monotonic() < deadline:  # both ranks sampling
            time.sleep(0.1)
        workers = children(torchrun.pid)
        assert len(workers) == 2, workers
        torchrun.send_signal(signal.SIGKILL)
        torchrun.wait()
        assert wait_gone(workers, 5.0), [w for w in workers if not gone(w)]
        # and the next sweep is not blocked by them: it finishes the work
        result = sweep_to_the_end(path, tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_regress_sampling_into_a_locked_directory_is_refused(tmp_path):
    import test_sweep_fakes as fakes

    from glide_eval.regress.candidate import sample_run
    from glide_eval.sweep.captions import load_captions

    config = load_config(write_config(tmp_path))
    components, captions = fakes.make_components(config, "cpu"), load_captions(config)
    holder = RunLock(config.output_dir, "a sweep")
    holder.acquire()
    try:
        with pytest.raises(RunDirBusy, match=rf"PID {os.getpid()}, since .*a sweep"):
            sample_run(config, components, captions, config.settings[:1], "none", False, quiet)
        assert not (config.output_dir / "run.json").exists()
    finally:
        holder.release()
    features = sample_run(config, components, captions, config.settings[:1], "none", False, quiet)
    assert features["unguided"]["features"]["pool"].shape == (14, 6)
