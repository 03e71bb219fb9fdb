"""Multi-node sweeps simulated on one machine (issue 29): two torchrun launchers, each a "node" of
two processes, run through `tools/sweep_node.sh` -- the very command line docs/cluster.sbatch
runs on each node (the first test runs the batch script itself, with stand-ins for `srun` and
`scontrol`) -- with the Slurm variables set by hand and the c10d rendezvous on 127.0.0.1.

- two nodes x two processes give results identical to one process (ranks 2 and 3 have
  LOCAL_RANK 0 and 1);
- a node lost mid-run (its launcher SIGKILLed, or the whole node frozen with SIGSTOP) stops
  the other node's ranks within a bounded time, each naming a lost rank; rerunning resumes
  without redoing any finished shard, to the same results;
- with MAX_RESTARTS=1 a SIGKILLed worker is restarted by torchrun and the sweep finishes alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_sweep import assert_same_shards, env_with_tests_on_path, shard_contents, write_config
from test_sweep_chaos import final_results
from test_sweep_lock import children, wait_gone

from glide_eval.sweep import components
from glide_eval.sweep.config import load_config
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.liveness import DEFAULT_LOST_AFTER_S, lost_after_s
from glide_eval.sweep.run import run_sweep

ROOT = Path(__file__).resolve().parents[1]
NODE_SCRIPT = ROOT / "tools" / "sweep_node.sh"
BATCH_SCRIPT = ROOT / "docs" / "cluster.sbatch"
# stand-ins: srun runs its command once (the test starts one batch script per "node");
# scontrol names 127.0.0.1 as the job's first node
SRUN = '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n'
SCONTROL = "#!/bin/sh\necho 127.0.0.1\n"
LOST_AFTER_S = 8  # GLIDE_EVAL_LOST_AFTER_S for these runs: a frozen node is lost after 8 s
BOUND_S = 60  # the surviving node's ranks end this long after the loss at the latest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(port: int, run_id: str, max_restarts: int = 0, min_nodes: int = 2) -> dict:
    """What Slurm and docs/cluster.sbatch would set on each node of a 2-node job with 2 GPUs per node."""
    return dict(
        env_with_tests_on_path(),
        SLURM_JOB_NUM_NODES="2",
        SLURM_GPUS_ON_NODE="2",
        SLURM_JOB_ID=run_id,
        RDZV_HOST="127.0.0.1",  # docs/cluster.sbatch sets it from scontrol
        RDZV_PORT=str(port),
        LOCAL_ADDR="127.0.0.1",
        MAX_RESTARTS=str(max_restarts),
        MIN_NODES=str(min_nodes),
        PYTHON=sys.executable,
        GLIDE_EVAL_LOST_AFTER_S=str(LOST_AFTER_S),
    )


def start_node(config: Path, env: dict, log: Path, script: Path = NODE_SCRIPT) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            ["bash", str(script), str(config), "--no-progress"],
            env=env,
            cwd=config.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_two_nodes(
    config: Path, max_restarts: int = 0, delay: float | tuple[float, float] = 0.0, batch: bool = False
) -> list[subprocess.Popen]:
    """The two launchers, through tools/sweep_node.sh or (`batch`) docs/cluster.sbatch; `delay`:
    seconds per batch (test_sweep_fakes: FAKE_DELAY_S, not in the config)."""
    env = node_env(free_port(), f"test-{os.getpid()}-{time.monotonic_ns()}", max_restarts)
    delays = delay if isinstance(delay, tuple) else (delay, delay)
    folder = config.parent
    script = NODE_SCRIPT
    if batch:
        stand_ins = folder / "bin"
        stand_ins.mkdir()
        for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
            (stand_ins / name).write_text(text)
            (stand_ins / name).chmod(0o755)
        env.update(
            PATH=f"{stand_ins}{os.pathsep}{env['PATH']}", SLURM_SUBMIT_DIR=str(ROOT), SLURM_JOB_NODELIST="n[1-2]"
        )
        script = BATCH_SCRIPT
    # node a hosts the rendezvous store (torchrun: the first launcher to bind RDZV_PORT), as the
    # RDZV_HOST node of a real job does; otherwise a loaded machine may let node b bind first, and
    # losing node b would take the store with it, so node a's launcher would end its ranks before
    # they could name the lost one
    nodes = [start_node(config, dict(env, FAKE_DELAY_S=str(delays[0])), folder / "node-a.log", script)]
    wait_for_port(int(env["RDZV_PORT"]), nodes[0])
    nodes.append(start_node(config, dict(env, FAKE_DELAY_S=str(delays[1])), folder / "node-b.log", script))
    return nodes


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until something listens on 127.0.0.1:port (`process` must stay alive meanwhile)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, f"the launcher ended (exit {process.returncode}) before binding port {port}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def one_process_reference(tmp_path: Path, **options) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    config = load_config(write_config(folder, **options))
    run_sweep(config, progress=False, log=lambda m: None)
    return config.output_dir


def records(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted((out / "shards").glob("*/*.json"))}


def finished_shards(out: Path) -> dict[str, tuple[int, str]]:
    """{record path: (its mtime_ns, the npz's sha256)} of every shard whose record is written."""
    return {name: ((out / name).stat().st_mtime_ns, r["sha256"]) for name, r in records(out).items()}


def wait_for_records(out: Path, count: int, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "shards").glob("*/*.json"))) < count:
        assert all(p.poll() is None for p in procs), "a node ended before the kill"
        assert time.monotonic() < deadline, "no shards finished"
        time.sleep(0.05)


def wait_for_node_a_done(folder: Path, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Until node a's ranks (named in its log) have recorded all 12 of their shards (of 24)."""
    deadline = time.monotonic() + timeout
    while True:
        assert all(p.poll() is None for p in procs), "a node ended before the kill"
        assert time.monotonic() < deadline, "node a did not finish its shards"
        ranks_a = {int(r) for r in re.findall(r"\[rank (\d)/4\] \d+ shards:", (folder / "node-a.log").read_text())}
        if len(ranks_a) == 2 and sum(r["rank"] in ranks_a for r in records(folder / "out").values()) == 12:
            return
        time.sleep(0.05)


def wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def test_resolve_device_takes_the_local_rank_not_the_global_rank(monkeypatch, tmp_path):
    """Rank 3 of a 2-node x 2-GPU job is the second process of its node: cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "auto"'))
    config = load_config(path)
    assert components.resolve_device(config) == "cuda:1"


def test_lost_after_is_read_from_the_environment_and_checked():
    assert lost_after_s({}) == DEFAULT_LOST_AFTER_S == 60
    assert lost_after_s({"GLIDE_EVAL_LOST_AFTER_S": "7.5"}) == 7.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(SweepError, match=f"GLIDE_EVAL_LOST_AFTER_S='{bad}': expected a number of seconds > 0"):
            lost_after_s({"GLIDE_EVAL_LOST_AFTER_S": bad})


def test_two_nodes_of_two_processes_equal_one_process(tmp_path):
    options = dict(n=8, shard_size=2, batch_size=2)
    reference = one_process_reference(tmp_path, **options)
    folder = tmp_path / "nodes"
    folder.mkdir()
    a, b = start_two_nodes(write_config(folder, **options), batch=True)
    assert wait(a, 300) == 0 and wait(b, 300) == 0, (folder / "node-a.log").read_text()[-3000:]
    out = folder / "out"
    ranks = {(r["rank"], r["node"], r["local_rank"]) for r in records(out).values()}
    assert ranks == {(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)}
    assert_same_shards(shard_contents(out), shard_contents(reference))
    pd.testing.assert_frame_equal(final_results(out), final_results(reference))


LOST = re.compile(r"\[rank (\d)/4\] rank (\d) \(node (\d), local rank (\d), host [^,]+, pid \d+\) is lost: (.*)")
# node a's pace and node b's (seconds per batch); "at-barrier": node a has finished its shards
# and waits in the final barrier (a gloo collective) when node b is lost
PACE = {"kill": (0.4, 0.4), "freeze": (0.4, 0.4), "kill-at-barrier": (0.05, 0.6), "freeze-at-barrier": (0.05, 0.6)}


@pytest.mark.parametrize("how", list(PACE))
def test_a_lost_node_stops_the_other_naming_it_and_a_rerun_resumes(tmp_path, how):
    """Node b's launcher is SIGKILLed (its workers follow it), or node b is frozen (SIGSTOP:
    no socket closes, only the missing answers tell), while node a samples or while it waits in
    the final barrier: node a's ranks each name a lost rank of node b and end, and (killed)
    node a's launcher with them; rerunning loses no finished shard."""
    options = dict(n=16, shard_size=2, batch_size=2, clip="[]")
    reference = one_process_reference(tmp_path, **options)
    folder = tmp_path / "nodes"
    folder.mkdir()
    config = write_config(folder, **options)
    a, b = start_two_nodes(config, delay=PACE[how])
    out = folder / "out"
    if how.endswith("at-barrier"):
        wait_for_node_a_done(folder, [a, b])
    else:
        wait_for_records(out, 3, [a, b])
    workers_a, workers_b = children(a.pid), children(b.pid)
    lost_at = time.monotonic()
    if how.startswith("kill"):
        os.kill(b.pid, signal.SIGKILL)  # the launcher only: its workers end with it (`launcher`)
    else:
        for pid in [b.pid, *workers_b]:  # torchrun starts each worker in a session of its own
            os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_gone(workers_a, BOUND_S), "node a's ranks did not stop"
        took = time.monotonic() - lost_at
        if how.startswith("kill"):  # a frozen rendezvous host may hold node a's launcher up: not ours to bound
            assert wait(a, BOUND_S) != 0
    finally:
        for pid in [a.pid, b.pid, *workers_a, *workers_b]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        a.wait()
        b.wait()
    assert wait_gone(workers_b, 10.0)
    log = (folder / "node-a.log").read_text()
    ranks_a = set(re.findall(r"\[rank (\d)/4\] \d+ shards:", log))
    named = {m[0]: m for m in LOST.findall(log)}
    assert len(ranks_a) == 2 and set(named) == ranks_a, log[-3000:]  # both ranks of node a name a lost rank
    assert all(m[1] not in ranks_a for m in named.values()), log[-3000:]  # of node b
    if how.startswith("freeze"):
        assert took >= LOST_AFTER_S and all(f"no answer for {LOST_AFTER_S} s" in m[4] for m in named.values())
    else:
        assert all("its process ended" in m[4] for m in named.values())
    assert len(records(out)) < 24, "the sweep finished before the node was lost"

    before = finished_shards(out)
    summary = run_sweep(load_config(config), progress=False, log=lambda m: None)
    after = finished_shards(out)
    assert {k: after[k] for k in before} == before  # not one finished shard redone
    assert summary["shards_skipped"] == len(before) and summary["shards_run"] == 24 - len(before)
    assert_same_shards(shard_contents(out), shard_contents(reference))
    pd.testing.assert_frame_equal(final_results(out), final_results(reference))


@pytest.mark.slow  # two rounds of four processes: about 45 s on 2 cores
def test_max_restarts_restarts_a_killed_worker_and_the_sweep_finishes(tmp_path):
    options = dict(n=16, shard_size=2, batch_size=2, clip="[]")
    reference = one_process_reference(tmp_path, **options)
    folder = tmp_path / "nodes"
    folder.mkdir()
    a, b = start_two_nodes(write_config(folder, **options), max_restarts=1, delay=0.3)
    out = folder / "out"
    wait_for_records(out, 3, [a, b])
    victim = children(b.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait(a, 300) == 0 and wait(b, 300) == 0, (folder / "node-a.log").read_text()[-3000:]
    logs = (folder / "node-a.log").read_text() + (folder / "node-b.log").read_text()
    resumed = [int(m) for m in re.findall(r"\[rank \d/4\] \d+ shards: (\d+) already finished", logs)]
    assert len(resumed) == 8 and sum(resumed) > 0, logs[-3000:]  # every rank started twice
    assert_same_shards(shard_contents(out), shard_contents(reference))
    pd.testing.assert_frame_equal(final_results(out), final_results(reference))


@pytest.mark.slow  # two rounds of processes: about 40 s on 2 cores
def test_a_node_added_to_a_running_sweep_joins_it(tmp_path):
    """docs/cluster.md, "Adding nodes": node a runs alone (MIN_NODES=1 of 2); node b's launcher
    joins the rendezvous mid-run, torchrun restarts node a's workers, and the four ranks finish
    the sweep (node a's finished shards kept) to the one-process results."""
    options = dict(n=16, shard_size=2, batch_size=2, clip="[]")
    reference = one_process_reference(tmp_path, **options)
    folder = tmp_path / "nodes"
    folder.mkdir()
    config = write_config(folder, **options)
    env = dict(node_env(free_port(), f"test-{os.getpid()}-{time.monotonic_ns()}", min_nodes=1), FAKE_DELAY_S="1.0")
    a = start_node(config, env, folder / "node-a.log")
    out = folder / "out"
    wait_for_records(out, 4, [a])
    b = start_node(config, env, folder / "node-b.log")
    assert wait(a, 300) == 0 and wait(b, 300) == 0, (folder / "node-a.log").read_text()[-3000:]
    log_a = (folder / "node-a.log").read_text()
    assert "[rank 0/2] 12 shards: 0 already finished" in log_a
    assert re.search(r"\[rank 0/4\] 6 shards: [1-6] already finished", log_a), log_a[-3000:]
    assert {r["rank"] for r in records(out).values()} == {0, 1, 2, 3}
    assert_same_shards(shard_contents(out), shard_contents(reference))
    pd.testing.assert_frame_equal(final_results(out), final_results(reference))


def test_docs_cluster_shows_the_scripts_as_they_are():
    doc = (ROOT / "docs" / "cluster.md").read_text()
    for script in (BATCH_SCRIPT, NODE_SCRIPT):
        assert f"```bash\n{script.read_text()}```" in doc, f"docs/cluster.md shows another {script.name}"
    assert "tools/sweep_node.sh" in BATCH_SCRIPT.read_text() and "srun" in BATCH_SCRIPT.read_text()
