"""Benchmark: the fast solvers against GLIDE's 250-step ancestral protocol.

1. Model evaluations per sample for each (solver, grid, steps) setting against the reference
   protocol (a classifier-free evaluation runs a doubled batch: 2 image rows per sample).
2. On the bundled toy world (16x16 base model, classifier-free scale 3, the same captions and
   noise seeds for every setting): FID (toy-classifier features, 95% delta-method interval) against
   the number of steps, per solver and time grid; the paired interval (metrics.paired_differences)
   of each setting's FID minus the reference's; and per (solver, grid) the fewest steps whose FID
   is not significantly above the reference's.
3. `--closed-form`: each solver's error and order of convergence on every grid for Gaussian data,
   where the exact model and the exact ODE solution are closed forms (tests/gaussian_closed_form.py).

A setting is SOLVER[@OPTION=VALUE...] x GRID x STEPS: `--solvers ddim,unipc@variant=bh1`,
`--grids uniform,ddim,logsnr,karras,quad` (uniform: GLIDE's "N"), `--steps 5,6,8,10`; a GRID of
`--steps` entries can also be spelled out ("ddim10", "logsnr6"). `--cache DIR` keeps each setting's
features, so a rerun (or a longer `--solvers` list) samples only the new settings.

    .venv/bin/python bench/solvers.py --count-only
    .venv/bin/python bench/solvers.py --closed-form
    .venv/bin/python bench/solvers.py --n 1024 --steps 5,6,8,10 --grids uniform,ddim,logsnr,karras,quad \
        --cache runs/bench_solvers_cache --json runs/bench_solvers.json --markdown runs/bench_solvers.md \
        --verdicts runs/bench_solvers_verdicts.csv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

# bench/metrics.py would shadow the metrics package: drop this script's folder from the import path
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from samplers.sampling import SAMPLERS, check_sampler_options, model_evaluations  # noqa: E402
from samplers.schedules import SOLVER_GRIDS, count_steps, grid_kind  # noqa: E402
from storage.files import atomic_write_text, save_npz, write_json  # noqa: E402

REFERENCE = ("ancestral", "250")
GRIDS = ("uniform", "ddim", *SOLVER_GRIDS)


def parse_solver(spec: str) -> tuple[str, dict]:
    """ "unipc@variant=bh1@order=3" -> ("unipc", {"variant": "bh1", "order": 3}) (values as TOML scalars)."""
    import tomllib

    name, *pairs = spec.split("@")
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = tomllib.loads(f"v = {value}")["v"] if value[:1] in "-+.0123456789tf[" else value
    check_sampler_options(name, options)
    return name, options


def label(method: str, options: dict) -> str:
    return "@".join([method, *(f"{k}={v}" for k, v in options.items())])


def respacings(steps: list[str], grids: list[str]) -> list[str]:
    """Each --steps entry on each grid: a bare count N becomes "N" (uniform) or "GRIDN"."""
    out = []
    for grid in grids:
        for step in steps:
            spelled = step if not step.isdigit() else (step if grid == "uniform" else f"{grid}{step}")
            if spelled not in out:
                out.append(spelled)
    return out


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--solvers", default="ddim,dpmpp_2m,unipc,plms", help="comma-separated SAMPLER[@OPTION=VALUE...]"
    )
    parser.add_argument("--steps", default="5,10,15,20,25", help="comma-separated step counts or respacings")
    parser.add_argument("--grids", default="uniform", help=f"comma-separated grids of {', '.join(GRIDS)}")
    parser.add_argument("--closed-form", action="store_true", help="print the Gaussian closed-form table only")
    parser.add_argument("--cache", default="", help="folder keeping each setting's features (reused when present)")
    parser.add_argument(
        "--reference",
        default="ancestral:250",
        help="METHOD:RESPACING of the reference setting ('' for none: FID rows only)",
    )
    parser.add_argument("--scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--n", type=int, default=1024, help="captions (one sample each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--count-only", action="store_true", help="only count model evaluations")
    parser.add_argument("--json", default="", help="write the results here (atomically)")
    parser.add_argument("--verdicts", default="", help="write the report's steps_verdicts.csv of the frontier here")
    parser.add_argument("--markdown", default="", help="write the frontier as markdown tables here (atomically)")
    args = parser.parse_args()
    try:
        args.solvers = [parse_solver(s) for s in args.solvers.split(",") if s]
    except ValueError as e:
        parser.error(str(e))
    args.grids = [g for g in args.grids.split(",") if g]
    if set(args.grids) - set(GRIDS):
        parser.error(f"unknown grid in --grids {args.grids}; known: {', '.join(GRIDS)}")
    args.steps = respacings([s for s in args.steps.split(",") if s], args.grids)
    if not args.reference:
        args.reference = None
        return args
    method, _, respacing = args.reference.partition(":")
    if method not in SAMPLERS or not respacing:
        parser.error(f"--reference must be METHOD:RESPACING with METHOD one of {', '.join(SAMPLERS)}")
    args.reference = (method, respacing)
    return args


def evaluation_rows(settings: list[tuple[str, dict, str]], guided: bool) -> list[dict]:
    """Model evaluations per sample (and image rows through the UNet) for each (method, options, respacing)."""
    rows_per_eval = 2 if guided else 1
    reference = model_evaluations(REFERENCE[0], count_steps(REFERENCE[1]))
    rows = []
    for method, options, respacing in settings:
        evals = model_evaluations(method, count_steps(respacing))
        rows.append(
            {
                "method": label(method, options),
                "grid": grid_kind(respacing),
                "steps": count_steps(respacing),
                "respacing": respacing,
                "evaluations": evals,
                "unet_rows": evals * rows_per_eval,
                "fraction_of_protocol": evals / reference,
            }
        )
    return rows


def sample_features(method: str, options: dict, respacing: str, args, captions, classifier) -> dict:
    """The toy-classifier pool features of one setting's samples, with its NaN count and sampling time;
    read from / written to `args.cache` when given (keyed by everything that makes the samples and
    their features, the weight files' sha256 included)."""
    from glide_eval.toy.models import load_toy_models
    from samplers.pipeline import sample_images

    key = json.dumps(
        [method, options, respacing, args.n, args.seed, args.scale, args.batch, args.weights_sha256], sort_keys=True
    )
    path = os.path.join(args.cache, hashlib.sha256(key.encode()).hexdigest()[:16] + ".npz") if args.cache else ""
    if path and os.path.exists(path):
        with np.load(path) as cached:
            return {
                "pool": cached["pool"],
                "nan_samples": int(cached["nan_samples"]),
                "seconds": float(cached["seconds"]),
            }
    start = time.perf_counter()
    result = sample_images(
        load_toy_models(),
        captions,
        list(range(len(captions))),
        args.seed,
        guidance=("cfg", args.scale),
        respacing=respacing,
        sampler=method,
        sampler_options=options,
        batch_size=args.batch,
    )
    out = {
        "pool": classifier(result.images)["pool"].numpy(),
        "nan_samples": len(result.nan_samples),
        "seconds": time.perf_counter() - start,
    }
    if path:
        os.makedirs(args.cache, exist_ok=True)
        save_npz(path, {"key": key, **out}, compress=False)
    return out


def toy_fid(method: str, options: dict, respacing: str, args, captions, classifier, reference_pool):
    """FID of one setting (and its pool features, for paired comparisons)."""
    from metrics.calculate import calculate_metrics

    sampled = sample_features(method, options, respacing, args, captions, classifier)
    metrics = calculate_metrics(
        {"pool": sampled["pool"]}, {"pool": reference_pool}, isc=False, prc=False, ci=True, seed=args.seed
    )
    row = {
        "method": label(method, options),
        "grid": grid_kind(respacing),
        "steps": count_steps(respacing),
        "respacing": respacing,
        "fid": metrics["fid"],
        "fid_ci_low": metrics["fid_ci_low"],
        "fid_ci_high": metrics["fid_ci_high"],
        "nan_samples": sampled["nan_samples"],
        "seconds": sampled["seconds"],
    }
    return row, sampled["pool"]


def paired_fid_difference(reference, candidate, reference_pool) -> dict:
    """FID(candidate) - FID(reference) with its paired 95% interval (same captions and seeds): "within the
    reference's interval" is judged on this difference, since a setting's own interval is of its expected FID."""
    from metrics import paired_differences

    fid = paired_differences({"pool": reference}, {"pool": candidate}, {"pool": reference_pool}, names=("fid",))["fid"]
    return {
        "fid_difference": fid["difference"],
        "fid_difference_low": fid["ci_low"],
        "fid_difference_high": fid["ci_high"],
    }


def setting_name(method: str, respacing: str) -> str:
    return f"{method}-{respacing}"


def verdicts(rows: list[dict], reference: str) -> pd.DataFrame:
    """The report's `steps_verdicts.csv` (reports.steps.steps_verdicts, the same function) of these rows: per
    solver and grid the fewest steps whose paired FID difference from the reference reaches 0 or below."""
    from reports.steps import steps_verdicts

    results = pd.DataFrame(
        {
            "family": "steps",
            "method": r["method"],
            "base_respacing": r["respacing"],
            "fid": r["fid"],
            "setting": setting_name(r["method"], r["respacing"]),
        }
        for r in rows
    )
    differences = pd.DataFrame(
        {
            "kind": "steps-reference",
            "metric": "fid",
            "setting_a": reference,
            "setting_b": setting_name(r["method"], r["respacing"]),
            "difference": r["fid_difference"],
            "ci_low": r["fid_difference_low"],
            "ci_high": r["fid_difference_high"],
        }
        for r in rows
    )
    return steps_verdicts(results, differences)


def fewest_steps(rows: list[dict], table: pd.DataFrame) -> dict:
    """{"method grid": fewest steps within (None: never)} from the verdicts table."""
    from reports.steps import line_label

    lines = {line_label(r["method"], r["respacing"]): f"{r['method']} {r['grid']}" for r in rows}
    return {
        lines[v["method"]]: None if pd.isna(v["fewest_steps"]) else int(v["fewest_steps"]) for _, v in table.iterrows()
    }


def markdown_tables(rows: list[dict], fewest: dict) -> str:
    """The frontier as two markdown tables: the fewest steps within the reference's paired interval
    per solver (rows) and grid (columns), then every setting's paired difference (bold: within)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    grids = list(dict.fromkeys(r["grid"] for r in rows))
    steps = sorted({r["steps"] for r in rows})
    spelled = {g: '`"N"` (GLIDE)' if g == "uniform" else f"`{g}N`" for g in grids}
    lines = ["| solver | " + " | ".join(spelled[g] for g in grids) + " |", "|---|" + "---|" * len(grids)]
    for m in methods:
        cells = [fewest.get(f"{m} {g}", "not run") for g in grids]
        lines.append(f"| {m} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines += ["", "| solver | grid | " + " | ".join(f"{n} steps" for n in steps) + " | fewest within |"]
    lines.append("|---|---|" + "---:|" * len(steps) + "---|")
    for m in methods:
        for g in grids:
            by_steps = {r["steps"]: r for r in rows if r["method"] == m and r["grid"] == g}
            if not by_steps:
                continue
            cells = []
            for n in steps:
                r = by_steps.get(n)
                if r is None:
                    cells.append("")
                    continue
                cell = f"{r['fid_difference']:+.2f} [{r['fid_difference_low']:+.2f}, {r['fid_difference_high']:+.2f}]"
                cells.append(f"**{cell}**" if r["fid_difference_low"] <= 0 else cell)
            best = fewest.get(f"{m} {g}")
            lines.append(f"| {m} | {spelled[g]} | " + " | ".join(cells) + f" | {'-' if best is None else best} |")
    return "\n".join(lines) + "\n"


def closed_form_table() -> list[dict]:
    """Every solver on every grid for Gaussian data (tests/gaussian_closed_form.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from gaussian_closed_form import CLOSED_FORM_SOLVERS, closed_form_row

    return [closed_form_row(method, options, grid) for method, options in CLOSED_FORM_SOLVERS for grid in GRIDS]


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.closed_form:
        rows = closed_form_table()
        print("mean absolute error for N(0.1, 0.2^2) data on GLIDE's cosine schedule; order: slope from 10 steps")
        print("(from 20: order 20+); steps 10 / 20 / 40 / 80 (ddim grid: 10 / 20 / 40 / 100)")
        print(f"{'method':>20} {'grid':>7} {'order':>6} {'order 20+':>9} {'error at 10':>11}   errors")
        for r in rows:
            errors = " / ".join(f"{e:.1e}" for e in r["errors"])
            print(
                f"{r['method']:>20} {r['grid']:>7} {r['order']:>6.2f} {r['order_tail']:>9.2f} "
                f"{r['errors'][0]:>11.1e}   {errors}"
            )
        if args.json:
            write_json(args.json, {"closed_form": rows})
        return
    settings = [(m, o, s) for m, o in args.solvers for s in args.steps]
    reference = [(args.reference[0], {}, args.reference[1])] if args.reference else []
    counts = evaluation_rows(reference + settings, guided=args.scale > 0)
    print(f"{'method':>20} {'steps':>9} {'evals':>6} {'UNet rows':>9} {'of protocol':>11}")
    for row in counts:
        print(
            f"{row['method']:>20} {row['respacing']:>9} {row['evaluations']:>6} {row['unet_rows']:>9} "
            f"{row['fraction_of_protocol']:>11.3f}"
        )
    payload = {"args": {k: v for k, v in vars(args).items()}, "evaluations": counts}
    if not args.count_only:
        from glide_eval.toy.models import BASE_RESOLUTION, FILES, weight_path
        from glide_eval.toy.world import dataset, sample_captions
        from metrics.extractors import create_extractor
        from storage import package_versions, sha256_file
        from torchvision_compat import ensure_torchvision

        ensure_torchvision()  # before any torch_fidelity / open_clip import
        classifier = create_extractor("toy-classifier")
        args.weights_sha256 = {FILES[k]: sha256_file(weight_path(k)) for k in ("base", "classifier")}
        payload["provenance"] = {"toy_weights_sha256": args.weights_sha256, "versions": package_versions()}
        captions = sample_captions(args.n, seed=args.seed)
        reference_images = dataset(args.n, "validation", BASE_RESOLUTION, seed=args.seed, start=args.n)[0]
        reference_pool = classifier(torch.from_numpy(reference_images))["pool"].numpy()
        rows, reference_features = [], None
        for method, options, respacing in reference + settings:
            r, features = toy_fid(method, options, respacing, args, captions, classifier, reference_pool)
            if reference and reference_features is None:
                reference_features = features
            elif reference:
                r.update(paired_fid_difference(reference_features, features, reference_pool))
            rows.append(r)
            paired = (
                f" vs reference {r['fid_difference']:+.3f} [{r['fid_difference_low']:+.3f}, "
                f"{r['fid_difference_high']:+.3f}]"
                if "fid_difference" in r
                else ""
            )
            print(
                f"{r['method']:>20} {respacing:>9} FID {r['fid']:.3f} [{r['fid_ci_low']:.3f}, {r['fid_ci_high']:.3f}]"
                f"{paired} nan {r['nan_samples']} {r['seconds']:.0f} s",
                flush=True,
            )
        payload["toy_fid"] = rows
        if reference:
            table = verdicts(rows[1:], setting_name(*reference[0][::2]))
            payload["fewest_steps_within_reference"] = fewest_steps(rows[1:], table)
            if args.verdicts:
                atomic_write_text(args.verdicts, table.to_csv(index=False))
            print("fewest steps not significantly worse than the reference:", payload["fewest_steps_within_reference"])
            if args.markdown:
                atomic_write_text(args.markdown, markdown_tables(rows[1:], payload["fewest_steps_within_reference"]))
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
