"""The first GPU run, in one go (issue 19): four checks, one JSON. Run by bench/gpu_check.sh.

1. parity: the golden UNet fixtures (made by the reference GLIDE code) on --device in float32,
   TF32 off: relative error against the fixture outputs (tolerance as `glide-eval parity`).
2. nan_rate: base 64px sampling (cfg 3, 25 steps) with the models converted to float16 and to
   bfloat16: the share of samples with a non-finite step (the sweep's NaN report). Released
   checkpoints from $GLIDE_CHECKPOINTS when set, else random weights of the official configs.
3. bench: bench/sampler.py, ours in bfloat16 (converted once, + torch.compile) against the
   reference's fp16 path (use_fp16=True) when glide_text2im is importable: samples/s ratio,
   GFLOP/s and the fraction of the GPU's peak.
4. torchrun: a toy mini sweep with two processes (torchrun) and with one; equal results.
   With fewer than two GPUs the two ranks run on the CPU (gloo): one GPU cannot host two
   NCCL ranks.

    python bench/gpu_check.py --device cuda --fixtures ../shared/golden --out gpu_check.json
    python bench/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json    # dry run on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
# the project's packages, not bench/metrics.py, under the name `metrics`
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
# dense float16/bfloat16 tensor-core peaks, TFLOP/s (vendor data sheets), by device name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
TOY_SWEEP = """
[run]
output_dir = "{out}"
batch_size = 4
shard_size = 4
device = "{device}"
[models]
engine = "toy"
[sampler]
resolution = 16
method = "ddim"
base_respacing = "4"
[captions]
source = "toy"
n = 16
[grid]
unguided = true
cfg = [3.0]
[metrics]
names = ["fid", "is", "precision", "recall"]
reference_n = 64
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "golden"))
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (a CPU dry run)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's fp16/bf16 peak (default: by name)")
    parser.add_argument("--skip", default="", help="comma-separated checks to skip")
    return parser.parse_args()


def check_parity(args) -> dict:
    from glide_eval.parity.core import MODULE_TOL, rel_error
    from glide_eval.parity.models import UNET_CONDITIONING, load_unet_fixture
    from glide_eval.sweep.components import apply_tf32

    apply_tf32(False)
    files = sorted(Path(args.fixtures).glob("unet_*.pt"))
    if not files:
        return {"skipped": f"no unet_*.pt fixtures in {args.fixtures}"}
    cases = {}
    for path in files:
        model, blob = load_unet_fixture(path)
        model = model.to(args.device).eval()
        inputs = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in blob["inputs"].items()}
        extra = {k: inputs[k] for k in UNET_CONDITIONING if k in inputs}
        with torch.no_grad():
            out = model(inputs["x"], inputs["timesteps"], inputs["tokens"], inputs["mask"], **extra)
        err = rel_error(out.cpu(), blob["output"])
        cases[path.name] = {"rel_error": err, "passed": err <= MODULE_TOL}
    return {"tolerance": MODULE_TOL, "tf32": False, "cases": cases, "passed": all(c["passed"] for c in cases.values())}


def check_nan_rate(args) -> dict:
    from samplers.pipeline import convert_models, load_glide_models, sample_images

    folder = os.environ.get("GLIDE_CHECKPOINTS")
    n, steps = (2, "3") if args.quick else (16, "25")
    captions = [f"a photo of thing number {i}" for i in range(n)]
    out = {"weights": "released" if folder and not args.quick else "random", "n": n, "steps": steps}
    for name in ("float16", "bfloat16"):
        dtype = getattr(torch, name)
        random = {} if out["weights"] == "released" else {"random_weights": True, "tiny": args.quick}
        models = convert_models(load_glide_models(folder if not random else None, device=args.device, **random), dtype)
        start = time.perf_counter()
        result = sample_images(
            models,
            captions,
            list(range(n)),
            0,
            guidance=("cfg", 3.0),
            respacing=steps,
            batch_size=n,
            device=args.device,
            dtype=dtype,
        )
        out[name] = {
            "nan_sample_share": len(result.nan_samples) / n,
            "nan_steps": result.nan_steps,
            "seconds": round(time.perf_counter() - start, 2),
        }
        del models
    return out


def run_json(cmd: list[str], timeout: int) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def check_bench(args) -> dict:
    steps, batch = ("2", "1") if args.quick else ("20", "8")
    cmd = [
        sys.executable,
        "bench/sampler.py",
        "--device",
        args.device,
        "--dtype",
        "bfloat16",
        "--convert",
        "--reference-fp16",
        "--steps",
        steps,
        "--batch",
        batch,
        "--no-profile",
        "--json",
    ]
    if not args.quick:
        cmd.append("--compile")
    report = run_json(cmd, timeout=300)
    peak = args.peak_tflops
    if not peak and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    ours = report["ours"]
    out = {
        "ours_bf16_compiled": ours,
        "reference_fp16": report.get("reference"),
        "speedup_samples_per_second": report.get("speedup_samples_per_second"),
        "rel_error_vs_reference": report.get("rel_error_vs_reference"),
        "peak_tflops": peak or None,
    }
    if peak:
        out["fraction_of_peak"] = round(ours["gflops_per_second"] / (peak * 1e3), 4)
    return out


def check_torchrun(args) -> dict:
    two_gpus = args.device.startswith("cuda") and torch.cuda.device_count() >= 2
    device = "cuda" if two_gpus else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = dict(
        os.environ,
        PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        GLIDE_EVAL_CACHE=str(tmp / "cache"),
    )
    results = {}
    for label, launcher in (
        ("one", [sys.executable, "-m", "glide_eval"]),
        (
            "two",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                "-m",
                "glide_eval",
            ],
        ),
    ):
        config = tmp / f"{label}.toml"
        config.write_text(TOY_SWEEP.format(out=tmp / label, device=device))
        proc = subprocess.run(
            [*launcher, "sweep", str(config), "--no-progress"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if proc.returncode:
            raise RuntimeError(f"{label}-process sweep exited {proc.returncode}: {proc.stderr[-2000:]}")
        results[label] = pd.read_csv(tmp / label / "results.csv")
    metrics = ["fid", "is", "precision", "recall"]
    one, two = results["one"].set_index("setting")[metrics], results["two"].set_index("setting")[metrics]
    return {"device": device, "equal": bool(one.equals(two)), "one": one.to_dict(), "two": two.to_dict()}


CHECKS = {"parity": check_parity, "nan_rate": check_nan_rate, "bench": check_bench, "torchrun": check_torchrun}


def main():
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report = {
        "device": args.device,
        "torch": torch.__version__,
        "quick": args.quick,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    for name, check in CHECKS.items():
        if name in skip:
            report[name] = {"skipped": "--skip"}
            continue
        start = time.perf_counter()
        try:
            report[name] = check(args)
        except Exception as e:  # one failing check must not lose the others' results
            report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))  # after every check
        print(
            f"{name}: {json.dumps({k: v for k, v in report[name].items() if k != 'traceback'}, default=str)[:400]}",
            file=sys.stderr,
        )
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
