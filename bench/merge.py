"""Benchmark: rank 0's peak memory in a sweep's merge against the number of settings (issue 29).

Writes synthetic shards -- 2048-d float32 "pool" features, N samples per setting, in the run
directory's layout (npz and a record with its sha256, where `RunDir` puts them; uncompressed,
which the merge reads the same way, one array at a time: compressing 10 GB of random floats
took minutes per GB on the 2 shared cores) -- for the largest number of settings asked, then
runs `glide_eval.sweep.merge.merge` in a fresh process for each number of settings (unguided
+ cfg scales 1..K-1, so the K-1 adjacent paired differences are measured too) and reports that
process's peak RSS (ru_maxrss), its RSS before the merge (Python, torch and glide_eval
imported) and the time. The smaller sweeps reuse the largest one's shards (a sweep's shard
keys do not depend on its grid).

The engine (`make_components`, handed to the merge directly) measures a FID-like statistic
with influence values in chunks, so its own temporaries stay small: what grows is what the
merge holds. `--code DIR` runs the merge from another checkout (e.g. `git archive` of an
older commit) to compare.

    .venv/bin/python bench/merge.py --settings 4,16,40 --n 30000 [--data DIR] [--keep] [--json]

Disk: settings x n x dim x 4 bytes (40 x 30,000 x 2048: 9.8 GB); deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# bench/metrics.py would hide the metrics package; glide_eval comes from PYTHONPATH or ROOT
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
CHUNK = 4096


def config_text(folder: Path, settings: int, n: int, shard_size: int, dim: int) -> str:
    scales = ", ".join(f"{float(k)}" for k in range(1, settings))
    return f"""
[run]
output_dir = "{folder / "run"}"
shard_size = {shard_size}
batch_size = {shard_size}
previews = 2
device = "cpu"
seed = 0
[models]
engine = "python:bench_merge:make_components"  # not loaded: the bench hands the merge its components
[captions]
source = "file"
path = "{folder / "captions.txt"}"
n = {n}
[grid]
unguided = true
cfg = [{scales}]
clip = []
[metrics]
names = ["fid"]
ci = true
[engine_options]
dim = {dim}
"""


def _chunks(x: np.ndarray):
    for start in range(0, len(x), CHUNK):
        yield x[start : start + CHUNK].astype(np.float64)


def _fid_like(pool: np.ndarray, reference: np.ndarray) -> tuple[float, np.ndarray]:
    """|mean - reference|^2 and its influence values, a chunk of rows in float64 at a time."""
    mean = sum(chunk.sum(0) for chunk in _chunks(pool)) / len(pool)
    gap = mean - reference
    psi = np.concatenate([2.0 * (chunk - mean) @ gap for chunk in _chunks(pool)])
    return float(gap @ gap), psi


def make_components(config, device: str):
    from glide_eval.sweep.components import Components

    dim = int(config.engine_options.get("dim", 2048))
    reference = np.full(dim, 0.01)

    def compute_metrics(features, captions, ci):
        value, psi = _fid_like(features["pool"], reference)
        return {"fid": value, "fid_se": float(psi.std(ddof=1) / np.sqrt(len(psi)))}

    def compute_differences(a, b, comparisons):
        value_a, psi_a = _fid_like(a["pool"], reference)
        value_b, psi_b = _fid_like(b["pool"], reference)
        se = float((psi_b - psi_a).std(ddof=1) / np.sqrt(len(psi_a)))
        d = value_b - value_a
        row = {"a": value_a, "b": value_b, "difference": d, "se": se, "ci_low": d - 2 * se, "ci_high": d + 2 * se}
        return {"fid": row}

    def unused(*args):
        raise RuntimeError("the merge benchmark samples nothing")

    return Components(
        unused, unused, compute_metrics, provenance={"files": {}}, compute_differences=compute_differences
    )


def load(folder: Path, settings: int, n: int, shard_size: int, dim: int):
    """(config, components, captions, generation hash) of the bench sweep with `settings` settings."""
    from glide_eval.sweep.config import load_config
    from glide_eval.sweep.rundir import generation_hash

    path = folder / f"sweep-{settings}.toml"
    path.write_text(config_text(folder, settings, n, shard_size, dim))
    config = load_config(path)
    components = make_components(config, "cpu")
    captions = (folder / "captions.txt").read_text().splitlines()[:n]
    return config, components, captions, generation_hash(config, components.provenance)


def write_shards(folder: Path, settings: int, n: int, shard_size: int, dim: int) -> float:
    """The sweep's shards with random features; seconds taken. Kept when already there."""
    from glide_eval.sweep.plan import make_plan
    from glide_eval.sweep.rundir import RunDir, keyed_shards
    from storage.rundir import feature_arrays

    (folder / "captions.txt").write_text("".join(f"caption {i}\n" for i in range(n)))
    config, components, captions, gen_hash = load(folder, settings, n, shard_size, dim)
    run_dir = RunDir(config.output_dir)
    t0 = time.perf_counter()
    for shard in run_dir.unfinished(keyed_shards(make_plan(config).shards_to_sample, gen_hash, captions)):
        rng = np.random.default_rng([round(shard.setting.scale * 1000), shard.index])
        arrays = {
            **feature_arrays({"pool": rng.standard_normal((shard.n, dim), dtype=np.float32) * 0.1}),
            "sample_ids": np.arange(shard.start, shard.stop, dtype=np.int64),
            "nan_count": np.asarray(0, dtype=np.int64),
            "previews": np.zeros((2, 3, 4, 4), np.uint8),
        }
        npz, record_path = run_dir.shard_paths(shard.setting.name, shard.index)
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez(npz, **arrays)
        with npz.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        record = {
            "key": shard.key,
            "sha256": digest,
            "file": str(npz.relative_to(run_dir.path)),
            "setting": shard.setting.name,
            "shard": shard.index,
            "start": shard.start,
            "stop": shard.stop,
            "n": shard.n,
            "timings": {"generate_s": 0.0, "featurize_s": 0.0, "wall_s": 0.0},
        }
        record_path.write_text(json.dumps(record))
    return time.perf_counter() - t0


def worker(folder: Path, settings: int, n: int, shard_size: int, dim: int) -> dict:
    from glide_eval.sweep.merge import merge
    from glide_eval.sweep.rundir import RunDir

    config, components, captions, gen_hash = load(folder, settings, n, shard_size, dim)
    RunDir(config.output_dir).write_run_files(config, components.provenance, captions, gen_hash)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    merge(config, components, captions, gen_hash, log=lambda m: None, remeasure=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "settings": settings,
        "n": n,
        "dim": dim,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "rss_before_merge_mb": before / 1024,
        "merge_s": time.perf_counter() - t0,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def run_worker(args, settings: int) -> dict:
    code = [str(Path(args.code).resolve())] if args.code else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*code, str(ROOT)]))
    cmd = [sys.executable, __file__, "--worker", str(settings), "--data", str(args.data)]
    cmd += ["--n", str(args.n), "--dim", str(args.dim), "--shard-size", str(args.shard_size)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the merge of {settings} settings failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="4,16,40", help="numbers of settings, comma-separated")
    parser.add_argument("--n", type=int, default=30000, help="samples per setting")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--data", help="folder for the shards (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the shards")
    parser.add_argument("--code", help="run the merge from this checkout instead")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # glide_eval from PYTHONPATH (`--code`)
        print(json.dumps(worker(Path(args.data), args.worker, args.n, args.shard_size, args.dim)))
        return
    sys.path.insert(0, str(ROOT))
    counts = sorted(int(k) for k in args.settings.split(","))
    made = args.data is None
    args.data = Path(args.data or tempfile.mkdtemp(prefix="glide-eval-bench-merge-"))
    args.data.mkdir(parents=True, exist_ok=True)
    try:
        write_s = write_shards(args.data, counts[-1], args.n, args.shard_size, args.dim)
        rows = [run_worker(args, k) for k in counts]
    finally:
        if not args.keep:
            shutil.rmtree(args.data / "run", ignore_errors=True)
            if made:
                shutil.rmtree(args.data, ignore_errors=True)
    report = {"write_shards_s": write_s, "merges": rows, "code": args.code or str(ROOT)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"shards written in {write_s:.0f} s ({counts[-1]} settings x {args.n} samples x {args.dim}-d float32)")
    print("| settings | peak RSS (MB) | RSS before the merge (MB) | merge (s) | CPU (s) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = [r["settings"], *(f"{r[k]:.0f}" for k in ("peak_rss_mb", "rss_before_merge_mb", "merge_s", "cpu_s"))]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
