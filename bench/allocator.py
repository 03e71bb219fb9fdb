"""Benchmark: glibc malloc as glibc sets it vs as `glide-eval` sets it (glide_eval/allocator.py).

Runs the toy world's samplers (unguided DDIM, classifier-free DDIM, CLIP-guided ancestral,
10 steps each, one thread) in fresh worker processes, alternating default and tuned malloc,
and reports the best time of each, the minor page faults and the system time per worker.

    .venv/bin/python bench/allocator.py --batch 128 --rounds 2 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = (("unguided", ("none", 0.0), "ddim"), ("cfg-3", ("cfg", 3.0), "ddim"), ("clip-2", ("clip", 2.0), "ancestral"))


def worker(tuned: bool, batch: int, reps: int) -> dict:
    import resource

    if tuned:
        from glide_eval.allocator import tune_glibc_malloc

        assert tune_glibc_malloc(), "tuning was not applied (not glibc, or MALLOC_* set)"
    import torch

    from glide_eval.toy import load_toy_models, sample_captions
    from samplers.pipeline import sample_images

    torch.set_num_threads(1)
    models = load_toy_models(clip=True)
    captions = sample_captions(batch, seed=1)
    out = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    for name, guidance, method in KINDS:
        times = []
        for _ in range(reps + 1):  # the first call warms up
            t0 = time.perf_counter()
            sample_images(
                models,
                captions,
                list(range(batch)),
                seed=0,
                guidance=guidance,
                respacing="10",
                sampler=method,
                batch_size=batch,
            )
            times.append(time.perf_counter() - t0)
        out[name] = min(times[1:])
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["minor_faults"] = after.ru_minflt - before.ru_minflt
    out["sys_s"] = after.ru_stime - before.ru_stime
    out["user_s"] = after.ru_utime - before.ru_utime
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=2, help="timed calls per sampler in a worker")
    parser.add_argument("--rounds", type=int, default=2, help="default/tuned worker pairs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "tuned", args.batch, args.reps)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    runs = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for mode in runs:
            cmd = [sys.executable, __file__, "--worker", mode, "--batch", str(args.batch), "--reps", str(args.reps)]
            runs[mode].append(
                json.loads(
                    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                    .stdout.strip()
                    .splitlines()[-1]
                )
            )
    summary = {}
    for mode, results in runs.items():
        summary[mode] = {k: min(r[k] for r in results) for k in results[0]}
    summary["speedup"] = {name: summary["default"][name] / summary["tuned"][name] for name, _, _ in KINDS}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"toy samplers, 10 steps, batch {args.batch}, 1 thread; best of {args.rounds} workers x {args.reps} calls")
    print(f"{'':>10} {'default s':>10} {'tuned s':>10} {'speedup':>8}")
    for name, _, _ in KINDS:
        print(
            f"{name:>10} {summary['default'][name]:>10.2f} {summary['tuned'][name]:>10.2f} "
            f"{summary['speedup'][name]:>7.2f}x"
        )
    for key in ("minor_faults", "sys_s", "user_s"):
        print(f"{key:>12}: default {summary['default'][key]:,.1f}  tuned {summary['tuned'][key]:,.1f}")


if __name__ == "__main__":
    main()
