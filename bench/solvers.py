"""Benchmark: the fast solvers against GLIDE's 250-step ancestral protocol.

1. Model evaluations per sample for each (solver, steps) setting against the reference protocol
   (a classifier-free evaluation runs a doubled batch: 2 image rows per sample).
2. On the bundled toy world (16x16 base model, classifier-free scale 3, the same captions and
   noise seeds for every setting): FID (toy-classifier features, 95% delta-method interval) against
   the number of steps, per solver; the paired interval (metrics.paired_differences) of each
   setting's FID minus the reference's; and per solver the fewest steps whose FID is not
   significantly above the reference's.

    .venv/bin/python bench/solvers.py --count-only
    .venv/bin/python bench/solvers.py --n 1024 --steps 5,10,15,20 --json runs/bench_solvers.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# bench/metrics.py would shadow the metrics package: drop this script's folder from the import path
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch  # noqa: E402

from samplers.sampling import SAMPLERS, model_evaluations  # noqa: E402
from samplers.schedules import space_timesteps  # noqa: E402

REFERENCE = ("ancestral", "250")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", default="ddim,dpmpp_2m,unipc,plms", help="comma-separated sampler names")
    parser.add_argument("--steps", default="5,10,15,20,25", help="comma-separated base respacings")
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
    args = parser.parse_args()
    args.solvers = [s for s in args.solvers.split(",") if s]
    unknown = [s for s in args.solvers if s not in SAMPLERS]
    if unknown:
        parser.error(f"unknown sampler {unknown[0]!r}; known: {', '.join(SAMPLERS)}")
    args.steps = [s for s in args.steps.split(",") if s]
    if not args.reference:
        args.reference = None
        return args
    method, _, respacing = args.reference.partition(":")
    if method not in SAMPLERS or not respacing:
        parser.error(f"--reference must be METHOD:RESPACING with METHOD one of {', '.join(SAMPLERS)}")
    args.reference = (method, respacing)
    return args


def evaluation_rows(settings: list[tuple[str, str]], guided: bool) -> list[dict]:
    """Model evaluations per sample (and image rows through the UNet) for each (method, respacing)."""
    rows_per_eval = 2 if guided else 1
    reference = model_evaluations(REFERENCE[0], len(space_timesteps(1000, REFERENCE[1])))
    rows = []
    for method, respacing in settings:
        evals = model_evaluations(method, len(space_timesteps(1000, respacing)))
        rows.append(
            {
                "method": method,
                "respacing": respacing,
                "evaluations": evals,
                "unet_rows": evals * rows_per_eval,
                "fraction_of_protocol": evals / reference,
            }
        )
    return rows


def toy_fid(method: str, respacing: str, args, captions, classifier, reference_pool) -> tuple[dict, object]:
    """FID of one setting (and its pool features, for paired comparisons)."""
    from glide_eval.toy.models import load_toy_models
    from metrics.calculate import calculate_metrics
    from samplers.pipeline import sample_images

    models = load_toy_models()
    start = time.perf_counter()
    result = sample_images(
        models,
        captions,
        list(range(len(captions))),
        args.seed,
        guidance=("cfg", args.scale),
        respacing=respacing,
        sampler=method,
        batch_size=args.batch,
    )
    seconds = time.perf_counter() - start
    feats = classifier(result.images)
    metrics = calculate_metrics(
        {"pool": feats["pool"].numpy()}, {"pool": reference_pool}, isc=False, prc=False, ci=True, seed=args.seed
    )
    row = {
        "method": method,
        "respacing": respacing,
        "fid": metrics["fid"],
        "fid_ci_low": metrics["fid_ci_low"],
        "fid_ci_high": metrics["fid_ci_high"],
        "nan_samples": len(result.nan_samples),
        "seconds": seconds,
    }
    return row, feats["pool"].numpy()


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


def fewest_steps(rows: list[dict]) -> dict:
    """Per method, the fewest steps whose FID is not significantly above the reference's (the paired
    difference's interval reaches 0 or below; None: never)."""
    best: dict = {}
    for row in rows:
        inside = row["fid_difference_low"] <= 0
        steps = len(space_timesteps(1000, row["respacing"]))
        if inside and (best.get(row["method"]) is None or steps < best[row["method"]]):
            best[row["method"]] = steps
        best.setdefault(row["method"], None)
    return best


def write_json(path: str, payload: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [(m, s) for m in args.solvers for s in args.steps]
    reference = [args.reference] if args.reference else []
    counts = evaluation_rows(reference + settings, guided=args.scale > 0)
    print(f"{'method':>10} {'steps':>6} {'evals':>6} {'UNet rows':>9} {'of protocol':>11}")
    for row in counts:
        print(
            f"{row['method']:>10} {row['respacing']:>6} {row['evaluations']:>6} {row['unet_rows']:>9} "
            f"{row['fraction_of_protocol']:>11.3f}"
        )
    payload = {"args": {k: v for k, v in vars(args).items()}, "evaluations": counts}
    if not args.count_only:
        from glide_eval.toy.models import BASE_RESOLUTION
        from glide_eval.toy.world import dataset, sample_captions
        from metrics.extractors import create_extractor
        from torchvision_compat import ensure_torchvision

        ensure_torchvision()  # before any torch_fidelity / open_clip import
        classifier = create_extractor("toy-classifier")
        captions = sample_captions(args.n, seed=args.seed)
        reference_images = dataset(args.n, "validation", BASE_RESOLUTION, seed=args.seed, start=args.n)[0]
        reference_pool = classifier(torch.from_numpy(reference_images))["pool"].numpy()
        rows, reference_features = [], None
        for method, respacing in reference + settings:
            r, features = toy_fid(method, respacing, args, captions, classifier, reference_pool)
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
                f"{method:>10} {respacing:>6} FID {r['fid']:.3f} [{r['fid_ci_low']:.3f}, {r['fid_ci_high']:.3f}]"
                f"{paired} nan {r['nan_samples']} {r['seconds']:.0f} s",
                flush=True,
            )
        payload["toy_fid"] = rows
        if reference:
            payload["fewest_steps_within_reference"] = fewest_steps(rows[1:])
            print("fewest steps not significantly worse than the reference:", payload["fewest_steps_within_reference"])
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
