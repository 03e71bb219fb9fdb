"""Benchmark: judgments needed by the balanced and the adaptive pair scheduler of
`glide-eval judge` until every model's 95% Elo interval is narrower than +-25 Elo.

Simulated raters answer by Bradley-Terry from known ratings, with ties: for a pair with
P(i beats j) = p, a tie has probability ``4 * tie_rate * p (1 - p)`` (= ``tie_rate`` for
equal models) taken half from each side, so a tie counting half a win keeps the expected
score at p and the fitted ratings estimate the known ones. Both schedulers draw from the
same rater model; every ``--check`` fraction of judgments the intervals are computed exactly
as `glide-eval elo` does (human_eval.elo.fit_question: point fit + multinomial bootstrap,
sum-zero ratings), and a run stops once every interval is narrower than 2 x ``--half-width``.
Coverage: how often the stopped intervals hold the true (sum-zero) ratings.

Measured (2 shared CPU cores): the default (10 models 0..700 Elo, ties 15% between equals)
with --reps 24 --seed 100: balanced 7418 +- 589 judgments, adaptive 5020 +- 183 (0.68x),
coverage of the 95% intervals 95.4% and 97.1% of 240 each, 10 min; the default 8 runs: 0.67x,
2.4 min. With --ratings 0,30,60,100,150,210,280,360 (8 runs): 3005 vs 2687 (0.89x; a
design calculation with the true ratings puts the best possible near 0.8x there).

    .venv/bin/python bench/judge_scheduler.py                       # 10 models, 8 runs each
    .venv/bin/python bench/judge_scheduler.py --reps 40 --json
    .venv/bin/python bench/judge_scheduler.py --ratings 0,40,80,120 --tie-rate 0.2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from human_eval.elo import fit_question, win_probability
from human_eval.fit import PairCounts
from human_eval.judge.scheduler import adaptive_choice, balanced_choice, fitted_theta

DEFAULT_RATINGS = "0,50,100,150,200,300,400,500,600,700"  # Elo of 10 settings, weak to strong guidance


def simulate_outcome(p: float, tie_rate: float, rng: np.random.Generator) -> int:
    """0: i wins, 1: j wins, 2: tie."""
    tie = 4.0 * tie_rate * p * (1.0 - p)
    u = rng.random()
    return 0 if u < p - tie / 2 else (2 if u < p + tie / 2 else 1)


def intervals(counts, i, j, m, rounds, seed):
    seen = counts.sum(1) > 0
    pc = PairCounts([f"m{k}" for k in range(m)], i[seen], j[seen], counts[seen].copy())
    result = fit_question(pc, rounds=rounds, seed=seed)
    lower, upper = result._quantiles(result.replicates)
    return result.ratings, lower, upper


def run_one(kind, ratings, tie_rate, half_width, rounds, check, refit, max_n, seed):
    m = len(ratings)
    i, j = np.triu_indices(m, 1)
    rng = np.random.default_rng(seed)
    choice_rng = np.random.default_rng(seed + 10_000)
    p_true = win_probability(ratings[i], ratings[j])
    counts = np.zeros((len(i), 3))
    theta, next_check, n = None, len(i), 0
    while n < max_n:
        if kind == "adaptive":
            if theta is None or n % refit == 0:
                theta = fitted_theta(counts, i, j, m)
            k = adaptive_choice(counts, i, j, m, choice_rng, theta=theta)
        else:
            k = balanced_choice(counts.sum(1), choice_rng)
        counts[k, simulate_outcome(p_true[k], tie_rate, rng)] += 1
        n += 1
        if n >= next_check and (counts.sum(1) > 0).all():
            next_check = max(n + 10, int(n * (1 + check)))
            try:
                _, lower, upper = intervals(counts, i, j, m, rounds, seed)
            except ValueError:  # FitError: not identifiable yet
                continue
            if np.all(upper - lower < 2 * half_width):
                truth = ratings - ratings.mean()
                return {
                    "n": n,
                    "covered": int(((lower <= truth) & (truth <= upper)).sum()),
                    "models": m,
                    "ties": int(counts[:, 2].sum()),
                    "per_pair": counts.sum(1).astype(int).tolist(),
                }
    return {
        "n": None,
        "covered": 0,
        "models": m,
        "ties": int(counts[:, 2].sum()),
        "per_pair": counts.sum(1).astype(int).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratings", default=DEFAULT_RATINGS, help="true Elo ratings, comma separated")
    ap.add_argument("--tie-rate", type=float, default=0.15, help="tie probability between equal models (<= 0.5)")
    ap.add_argument("--half-width", type=float, default=25.0, help="stop when every interval is narrower than +-this")
    ap.add_argument("--reps", type=int, default=8, help="simulated sessions per scheduler")
    ap.add_argument("--rounds", type=int, default=500, help="bootstrap rounds of each interval check")
    ap.add_argument("--check", type=float, default=0.03, help="check the intervals every this fraction of judgments")
    ap.add_argument("--refit", type=int, default=10, help="adaptive: refit the ratings every this many judgments")
    ap.add_argument("--max-n", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.tie_rate <= 0.5:
        ap.error("--tie-rate must be in [0, 0.5]")
    ratings = np.array([float(x) for x in args.ratings.split(",")])
    out = {
        "ratings": ratings.tolist(),
        "tie_rate": args.tie_rate,
        "half_width": args.half_width,
        "reps": args.reps,
        "rounds": args.rounds,
        "check": args.check,
        "schedulers": {},
    }
    for kind in ("balanced", "adaptive"):
        start = time.perf_counter()
        runs = [
            run_one(
                kind,
                ratings,
                args.tie_rate,
                args.half_width,
                args.rounds,
                args.check,
                args.refit,
                args.max_n,
                args.seed + rep,
            )
            for rep in range(args.reps)
        ]
        ns = np.array([r["n"] for r in runs if r["n"] is not None], dtype=float)
        covered = sum(r["covered"] for r in runs)
        total = sum(r["models"] for r in runs if r["n"] is not None)
        out["schedulers"][kind] = {
            "judgments_mean": float(ns.mean()) if len(ns) else None,
            "judgments_sd": float(ns.std(ddof=1)) if len(ns) > 1 else None,
            "judgments": [r["n"] for r in runs],
            "unfinished": sum(r["n"] is None for r in runs),
            "coverage": covered / total if total else None,
            "intervals": total,
            "tie_share": float(np.mean([r["ties"] / r["n"] for r in runs if r["n"]])),
            "per_pair_first_run": runs[0]["per_pair"],
            "seconds": time.perf_counter() - start,
        }
        if not args.json:
            s = out["schedulers"][kind]
            print(
                f"{kind:9s} judgments {s['judgments_mean']:8.0f} +- {s['judgments_sd'] or 0:6.0f} (sd over "
                f"{args.reps} runs), coverage {s['coverage']:.3f} of {total} intervals, ties "
                f"{s['tie_share']:.3f}, {s['seconds']:.0f} s",
                flush=True,
            )
    b, a = (out["schedulers"][k]["judgments_mean"] for k in ("balanced", "adaptive"))
    out["ratio"] = a / b if a and b else None
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"adaptive / balanced = {out['ratio']:.3f} (target <= 0.7)")


if __name__ == "__main__":
    main()
