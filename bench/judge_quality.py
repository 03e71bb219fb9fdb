"""Simulation: do the judging session's attention checks and repeated pairs catch a random
clicker, and does the Elo fit without the flagged raters recover the true ratings better?

A real `JudgeApp` (Starlette TestClient, its files in a temporary folder) serves a catalog of
``--models`` settings with known Elo ratings; each setting's images carry its index in their
pixels, so a simulated rater sees what a browser gets (two single-use image URLs, decoded PNG
pixels) and nothing else. ``--raters`` raters take turns; each answers ``--answers`` trials.
Honest raters answer by Bradley-Terry from the true ratings (ties: ``4 * tie_rate * p (1 - p)``,
half from each side) and call the same image on both sides a tie with probability
``--attentive``; one rater clicks left / right / tie uniformly at random. The session shows
``--attention-rate`` attention checks and ``--repeat-rate`` repeated pairs. The flags are the
admin view's (`human_eval.judge.quality`); the fit is `glide-eval elo`'s (`human_eval.elo.analyze`,
no bootstrap) of the CSV, with all raters and with `exclude_raters(flagged)`; the error is the
RMSE of the sum-zero ratings against the true ones (also sum-zero).

Measured (2 CPU cores shared with other jobs; 100 s user + 19 s sys, 4 min wall), the defaults
(6 settings 0..500 Elo, 10 raters x 150 answers, 10% attention checks, 10% repeats, seeds 0-7):
the clicker was flagged in 8 of 8 runs (attention pass rate 0.24-0.58, consistency 0.20-0.50,
agreement 0.36-0.53) and no honest rater in 72 (their attention >= 0.82, agreement >= 0.72;
consistency alone is a weak signal: honest raters went down to 0.25 on close pairs). The RMSE of
the fitted ratings to the true ones was 34.5 Elo with all raters (mean of 8) and 19.8 without the
flagged ones, lower in 8 of 8 runs.

    .venv/bin/python bench/judge_quality.py                 # 8 runs
    .venv/bin/python bench/judge_quality.py --reps 3 --json
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.testclient import TestClient

from human_eval.elo import analyze
from human_eval.judge.access import Access
from human_eval.judge.app import JudgeApp
from human_eval.judge.catalog import Catalog, ImageEntry
from human_eval.judge.store import JudgmentStore
from human_eval.judgments import exclude_raters, read_judgments

HOST = "127.0.0.1:8765"
BASE = f"http://{HOST}"
ORIGIN = {"origin": BASE}


def write_catalog(root: Path, models: int, prompts: int) -> Catalog:
    """Setting k's images: 16x16 PNGs whose red channel is 40 k (the rater's only clue) and whose
    other channels vary with the prompt."""
    images = {}
    for k in range(models):
        folder = root / "run" / "images" / f"m{k}"
        folder.mkdir(parents=True)
        images[f"m{k}"] = {}
        for p in range(prompts):
            pixels = np.zeros((16, 16, 3), np.uint8)
            pixels[..., 0] = 40 * k
            pixels[..., 1] = 10 * p
            path = folder / f"{p:06d}.png"
            Image.fromarray(pixels).save(path)
            images[f"m{k}"][p] = ImageEntry(f"m{k}/{p}", root / "run", path)
    return Catalog([f"m{k}" for k in range(models)], images, {p: f"caption {p}" for p in range(prompts)}, 0)


def seen_model(client: TestClient, url: str) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(client.get(url).content)))
    return int(pixels[0, 0, 0]) // 40


def honest(ratings, tie_rate, attentive, rng):
    def choose(left: int, right: int) -> str:
        if left == right:
            return "tie" if rng.random() < attentive else str(rng.choice(["left", "right"]))
        p = 1.0 / (1.0 + 10.0 ** ((ratings[right] - ratings[left]) / 400.0))
        tie = 4.0 * tie_rate * p * (1.0 - p)
        u = rng.random()
        return "left" if u < p - tie / 2 else ("tie" if u < p + tie / 2 else "right")

    return choose


def clicker(rng):
    return lambda left, right: str(rng.choice(["left", "right", "tie"]))


def rmse(fitted: dict[str, float], truth: np.ndarray) -> float:
    names = [f"m{k}" for k in range(len(truth))]
    est = np.array([fitted[n] for n in names])
    centred = truth - truth.mean()
    return float(np.sqrt(np.mean((est - est.mean() - centred) ** 2)))


def fit(judgments) -> dict[str, float]:
    result = analyze(judgments, rounds=0, seed=0)[0]
    return dict(zip(result.models, result.ratings))


def run_once(args, seed: int) -> dict:
    ratings = np.linspace(0, args.spread, args.models)
    rng = np.random.default_rng(seed)
    names = [f"r{k}" for k in range(args.raters)]
    bad = names[int(rng.integers(args.raters))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = write_catalog(root, args.models, args.prompts)
        out = root / "out" / "judgments.csv"
        with JudgmentStore(out) as store:
            access = Access.open(f"{out}.raters.json", names)
            with JudgeApp(
                catalog,
                store,
                ["photorealism"],
                access,
                [HOST],
                seed=seed,
                attention_rate=args.attention_rate,
                repeat_rate=args.repeat_rate,
            ) as app:
                clients, behave = {}, {}
                for name in names:
                    clients[name] = TestClient(app.app, base_url=BASE)
                    clients[name].get(f"/r/{access.issued[name]}", follow_redirects=False)
                    own = np.random.default_rng([seed, names.index(name)])
                    behave[name] = clicker(own) if name == bad else honest(ratings, args.tie_rate, args.attentive, own)
                for _ in range(args.answers):
                    for name in names:
                        client = clients[name]
                        shown = client.post("/api/next", json={}, headers=ORIGIN).json()
                        left, right = (seen_model(client, shown[k]) for k in ("left_image", "right_image"))
                        body = {"trial_id": shown["trial_id"], "answer": behave[name](left, right)}
                        assert client.post("/api/answer", json=body, headers=ORIGIN).status_code == 200
                admin = TestClient(app.app, base_url=BASE)
                admin.get(f"/admin/{access.issued['admin']}", follow_redirects=False)
                summary = admin.get("/api/admin").json()
        judgments = read_judgments(out)
        flagged = summary["flagged"]
        kept, _ = exclude_raters(judgments, flagged)
        stats = {s["rater"]: s for s in summary["raters"]}
        return {
            "seed": seed,
            "clicker": bad,
            "flagged": flagged,
            "clicker_flagged": bad in flagged,
            "honest_flagged": len([f for f in flagged if f != bad]),
            "rmse_all": rmse(fit(judgments), ratings),
            "rmse_without_flagged": rmse(fit(kept), ratings),
            "rmse_without_clicker_oracle": rmse(fit(exclude_raters(judgments, [bad])[0]), ratings),
            "clicker_stats": {k: stats[bad][k] for k in ("attention", "consistency", "agreement", "flags")},
            "honest_stats": {
                k: [stats[n][k] for n in names if n != bad] for k in ("attention", "consistency", "agreement")
            },
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--spread", type=float, default=500.0, help="Elo of the best setting (the worst: 0)")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--raters", type=int, default=10)
    parser.add_argument("--answers", type=int, default=150, help="answers per rater")
    parser.add_argument("--attention-rate", type=float, default=0.1)
    parser.add_argument("--repeat-rate", type=float, default=0.1)
    parser.add_argument("--tie-rate", type=float, default=0.15)
    parser.add_argument("--attentive", type=float, default=0.95)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    runs = [run_once(args, args.seed + r) for r in range(args.reps)]
    summary = {
        "runs": len(runs),
        "clicker_flagged": sum(r["clicker_flagged"] for r in runs),
        "honest_flagged": sum(r["honest_flagged"] for r in runs),
        "honest_raters": len(runs) * (args.raters - 1),
        "rmse_all_mean": float(np.mean([r["rmse_all"] for r in runs])),
        "rmse_without_flagged_mean": float(np.mean([r["rmse_without_flagged"] for r in runs])),
        "fit_better_without_flagged": sum(r["rmse_without_flagged"] < r["rmse_all"] for r in runs),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        print(json.dumps({"summary": summary, "runs": runs, "options": vars(args)}, indent=1, default=float))
        return
    print(f"{'seed':>4} {'clicker':>7} {'flagged':<12} {'RMSE all':>9} {'w/o flagged':>11}  clicker: att cons agr")
    for r in runs:
        c = r["clicker_stats"]
        print(
            f"{r['seed']:>4} {r['clicker']:>7} {','.join(r['flagged']) or '-':<12} {r['rmse_all']:9.1f} "
            f"{r['rmse_without_flagged']:11.1f}  {c['attention']:.2f} {c['consistency']:.2f} {c['agreement']:.2f}"
        )
    honest = {
        k: np.concatenate([r["honest_stats"][k] for r in runs]) for k in ("attention", "consistency", "agreement")
    }
    print(
        "honest raters: attention min {:.2f}, consistency min {:.2f} (median {:.2f}), agreement min {:.2f}".format(
            np.nanmin(honest["attention"].astype(float)),
            np.nanmin(honest["consistency"].astype(float)),
            np.nanmedian(honest["consistency"].astype(float)),
            np.nanmin(honest["agreement"].astype(float)),
        )
    )
    print(
        f"clicker flagged in {summary['clicker_flagged']}/{summary['runs']} runs; honest raters flagged "
        f"{summary['honest_flagged']}/{summary['honest_raters']}; mean RMSE to the true ratings "
        f"{summary['rmse_all_mean']:.1f} Elo with all raters, {summary['rmse_without_flagged_mean']:.1f} without "
        f"the flagged (better in {summary['fit_better_without_flagged']}/{summary['runs']}); {summary['seconds']} s"
    )


if __name__ == "__main__":
    main()
