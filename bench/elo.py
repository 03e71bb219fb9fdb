"""Benchmark: Elo fit + multinomial bootstrap (target: 1,000 rounds, 20 models, 100,000
judgments in under 5 s on CPU).

Times each stage of `glide-eval elo` on simulated judgments (with ties): reading and
validating the CSV, the point fit (L-BFGS + Newton polish), the bootstrap (multinomial
resampling of the cell counts + batched Newton over all replicates) and the output tables.
Side by side in the same run it times the naive bootstrap (resample judgment rows, then one
scipy L-BFGS fit per replicate) on a few rounds and reports the per-round speed ratio.
Prints the number of other processes and the load average, since the CPU may be shared.

    .venv/bin/python bench/elo.py                      # 20 models, 100k judgments, 1000 rounds
    .venv/bin/python bench/elo.py --models 50 --judgments 1000000 --json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from printing import print_report
from scipy.optimize import minimize

from human_eval.bootstrap import bootstrap_ratings
from human_eval.elo import fit_question, question_seed, win_probability
from human_eval.fit import ELO_PER_NAT, fit_elo, neg_log_likelihood, pair_counts
from human_eval.judgments import read_judgments


def simulate(m, n, rng):
    ratings = rng.normal(0, 150, m)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p = win_probability(ratings[a], ratings[b])
    tie = 1.2 * p * (1 - p)
    u = rng.random(n)
    names = np.array([f"model_{k:02d}" for k in range(m)], dtype=object)
    return names[a], names[b], np.where(u < p - tie / 2, "a", np.where(u < p + tie / 2, "tie", "b"))


def naive_bootstrap(model_a, model_b, winner, rounds, rng):
    """Row resampling and one cold L-BFGS fit per replicate (the slow reference way)."""
    out = []
    for _ in range(rounds):
        idx = rng.integers(0, len(winner), len(winner))
        pc = pair_counts(model_a[idx], model_b[idx], winner[idx])
        res = minimize(lambda t, pc=pc: neg_log_likelihood(t, pc), np.zeros(pc.n_models), jac=True, method="L-BFGS-B")
        out.append((res.x - res.x.mean()) * ELO_PER_NAT)
    return np.array(out)


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--judgments", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--naive-rounds", type=int, default=20, help="rounds of the naive bootstrap (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the bootstrap (the fastest counts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    model_a, model_b, winner = simulate(args.models, args.judgments, rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "judgments.csv"
        with open(path, "w") as f:
            f.write("model_a,model_b,winner\n")
            f.writelines(f"{a},{b},{w}\n" for a, b, w in zip(model_a, model_b, winner))
        judgments, t_read = timed(lambda: read_judgments(path))
    frame = judgments.frame
    pc, t_counts = timed(lambda: pair_counts(frame["model_a"], frame["model_b"], frame["winner"]))
    ratings, t_fit = timed(lambda: fit_elo(pc))
    boot_times = []
    for _ in range(args.repeats):
        (theta, _, ok), t = timed(
            lambda: bootstrap_ratings(pc, ratings / ELO_PER_NAT, args.rounds, question_seed(0, "all"))
        )
        boot_times.append(t)
    t_boot = min(boot_times)
    result, t_all = timed(lambda: fit_question(pc, rounds=args.rounds, seed=0))
    _, t_tables = timed(lambda: (result.ratings_table(), result.pairs_table(), result.winrate_matrix()))

    report = {
        "models": args.models,
        "judgments": args.judgments,
        "rounds": args.rounds,
        "read_csv_s": round(t_read, 3),
        "pair_counts_s": round(t_counts, 3),
        "point_fit_s": round(t_fit, 3),
        "bootstrap_s": round(t_boot, 3),
        "bootstrap_runs_s": [round(t, 3) for t in boot_times],
        "fit_plus_bootstrap_s": round(t_all, 3),
        "tables_s": round(t_tables, 3),
        "counts_to_tables_s": round(t_all + t_tables, 3),
        "valid_rounds": int(ok.sum()),
        "other_processes": len([p for p in os.listdir("/proc") if p.isdigit()]) - 1,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    if args.naive_rounds:
        _, t_naive = timed(
            lambda: naive_bootstrap(model_a, model_b, winner, args.naive_rounds, np.random.default_rng(1))
        )
        per_round_naive, per_round = t_naive / args.naive_rounds, t_boot / args.rounds
        report.update(
            naive_per_round_s=round(per_round_naive, 4),
            ours_per_round_s=round(per_round, 5),
            speedup_per_round=round(per_round_naive / per_round, 1),
        )
    print_report(report, args.json, "{key:<22} {value}")


if __name__ == "__main__":
    main()
