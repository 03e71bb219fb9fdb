"""Chaos (issue 18): SIGKILL a small sweep at random moments, single-process and under torchrun
(killing the launcher), rerun to completion; the results equal an uninterrupted run's in every
column but the timings, the shards are identical, and no temporary file or lock record is left.

The uninterrupted run uses the very same config file and output path (moved aside after), so
even the config and generation hashes in the results must agree.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import assert_same_shards, env_with_tests_on_path, shard_contents, write_config
from test_sweep_lock import children, wait_gone

from glide_eval.sweep.lock import HOLDER_NAME
from storage import TEMP_GLOB

TIMING = ["generate_s", "featurize_s", "metrics_s", "wall_time_s"]


def sweep_cmd(path: Path, torchrun_port: int | None) -> list[str]:
    launcher = (
        []
        if torchrun_port is None
        else ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(torchrun_port)]
    )
    return [sys.executable, *launcher, "-m", "glide_eval", "sweep", str(path), "--no-progress"]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env=env_with_tests_on_path(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_at_random(path: Path, folder: Path, rng: random.Random, kills: int, span: float, torchrun: bool) -> int:
    """Start the sweep and SIGKILL it (the launcher, under torchrun) after uniform(0, span) seconds,
    until `kills` kills have landed; the number of runs that finished on their own meanwhile."""
    landed = finished = attempt = 0
    while landed < kills:
        attempt += 1
        cmd = sweep_cmd(path, 32000 + (os.getpid() * 7 + attempt) % 2000 if torchrun else None)
        proc = start(cmd, folder)
        time.sleep(rng.uniform(0.0, span))
        workers = children(proc.pid) if torchrun else []
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        else:
            finished += 1
        proc.wait()
        proc.stderr.close()
        assert wait_gone(workers, 5.0), "torchrun workers outlived their launcher"
        assert attempt < kills * 4, "the sweep keeps finishing before the kill: raise delay_s"
    return finished


def final_results(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").drop(columns=TIMING)


@pytest.mark.slow
@pytest.mark.parametrize("torchrun", [False, True], ids=["one-process", "torchrun"])
def test_sigkill_at_random_moments_then_finish_equals_an_uninterrupted_run(tmp_path, torchrun):
    path = write_config(tmp_path, n=16, shard_size=4, batch_size=2, delay=0.1)
    out = tmp_path / "out"
    t0 = time.monotonic()
    whole = subprocess.run(
        sweep_cmd(path, 34000 + os.getpid() % 1000 if torchrun else None),
        env=env_with_tests_on_path(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    span = time.monotonic() - t0
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = tmp_path / "uninterrupted"
    out.rename(uninterrupted)

    rng = random.Random(18 + torchrun)
    kill_at_random(path, tmp_path, rng, kills=3 if torchrun else 6, span=span, torchrun=torchrun)
    done = subprocess.run(
        sweep_cmd(path, 36000 + os.getpid() % 1000 if torchrun else None),
        env=env_with_tests_on_path(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    pd.testing.assert_frame_equal(final_results(out), final_results(uninterrupted))
    assert_same_shards(shard_contents(out), shard_contents(uninterrupted))
    assert sorted(p.relative_to(out) for p in out.rglob("*.json")) == sorted(
        p.relative_to(uninterrupted) for p in uninterrupted.rglob("*.json")
    )
    assert list(out.rglob(TEMP_GLOB)) == [] and not (out / HOLDER_NAME).exists()
