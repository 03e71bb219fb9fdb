"""Metrics speed and memory, side by side with torch-fidelity in one run.

    .venv/bin/python bench/metrics.py --n 10000 [--n 30000] [--images 32] [--json out.json]

- feature extraction, images/s: our Inception wrapper vs torch-fidelity's dataset path
  (same random-weight file in torch-fidelity's format, 64x64 uint8 images);
- FID from 2048-d statistics: ours (Cholesky + eigvalsh of F^T S2 F) vs torch-fidelity's
  (eigvals of S1 S2);
- precision/recall on random 2048-d features at each --n: torch-fidelity's "full" (default)
  and "part" (save_cpu_ram) modes vs ours
  fresh and ours with the reference k-NN radii cached; each run in its own process, reporting
  wall and CPU time (the fairer measure on a shared machine), peak RSS and the RSS once
  the features were made (the floor); modes interleaved --repeat times, best kept; the
  0/1 decisions are checked equal (same counts).
- intervals (--intervals N, e.g. 30000): one N-sample setting with 2048-d features, 1008 logits
  and CLIP scores against a cached N-sample reference: the point estimates alone, then with
  every interval (`ci=True`: FID delta method, IS per split, precision/CLIP means, recall
  half-sampling), wall and CPU time, each interval's own cost, beside today's percentile
  bootstrap of FID (--bootstrap-rounds timed, scaled to 200) and torch-fidelity's FID.
- beyond Inception (--beyond N, e.g. 30000): each extractor (DINOv2 ViT-L/14, CLIP ViT-L/14@336;
  the user's files with --dinov2-weights / --clip-image-weights, else official-format random
  weights made here) on --beyond-images 64x64 images: images/s, peak memory (RSS; CUDA peak on a
  GPU) and the time at N images (extrapolated linearly when fewer were run); then each metric
  (fd_dinov2 and fd_clip with intervals, cmmd, density + coverage) on random N-sample features of
  the extractors' widths (1024, 768) against a cached N-sample reference, each in its own process
  (wall, CPU, peak RSS); --beyond-metrics-n M measures the metrics at M and extrapolates to N
  (quadratically for the pairwise ones, cmmd and density/coverage), saying so.

    # on a GPU (30,000 images through each extractor, every metric at 30,000):
    .venv/bin/python bench/metrics.py --images 0 --no-fid --no-prc --beyond 30000 --beyond-images 30000 \
        --device cuda --dinov2-weights dinov2_vitl14_pretrain.pth --clip-image-weights ViT-L-14-336px.pt
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from torchvision_compat import ensure_torchvision

ensure_torchvision()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _features(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    gen = torch.randn(n, 2048, generator=g).relu_()
    real = torch.randn(n, 2048, generator=g).relu_().mul_(1.02)
    return gen, real


def _prc_child(mode: str, n: int, queue):
    from metrics.prc import knn_radii, precision_recall_hits

    gen, real = _features(n, 0)
    radii = knn_radii(real) if mode == "ours-cached" else None  # computed once with the reference
    base = _rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if mode.startswith("torch-fidelity"):
        from torch_fidelity.metric_prc import calculate_precision_recall_full, calculate_precision_recall_part

        fn = calculate_precision_recall_part if mode.endswith("part") else calculate_precision_recall_full
        p, r = fn(gen, real, 3, 10000)
        counts = (round(p * n), round(r * n))
    else:
        gh, rh = precision_recall_hits(gen, real, real_radii=radii)
        counts = (int(gh.sum()), int(rh.sum()))
    seconds = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    peak = cpu1.ru_maxrss / 1024
    queue.put(
        {
            "mode": mode,
            "n": n,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "peak_rss_mb": peak,
            "rss_with_features_mb": base,
            "counts": counts,
        }
    )


PRC_MODES = ("torch-fidelity", "torch-fidelity-part", "ours", "ours-cached")


def bench_prc(n: int, repeat: int, modes=PRC_MODES) -> list[dict]:
    """Modes interleaved `repeat` times (a shared machine's load drifts); best run of each kept."""
    ctx = mp.get_context("spawn")
    best: dict[str, dict] = {}
    for _ in range(repeat):
        for mode in modes:
            q = ctx.Queue()
            p = ctx.Process(target=_prc_child, args=(mode, n, q))
            p.start()
            row = q.get()
            p.join()
            print(
                f"prc n={n} {mode:<15} {row['seconds']:8.2f} s wall {row['cpu_seconds']:8.2f} s CPU  "
                f"peak RSS {row['peak_rss_mb']:6.0f} MB (with features: {row['rss_with_features_mb']:.0f} MB)"
                f"  counts {row['counts']}",
                flush=True,
            )
            if mode not in best or row["cpu_seconds"] < best[mode]["cpu_seconds"]:
                best[mode] = row
    rows = [best[m] for m in modes]
    ref = best.get("torch-fidelity")
    for row in rows:
        if ref is None or row["mode"].startswith("torch-fidelity"):
            continue
        row["wall_ratio_vs_torch_fidelity"] = row["seconds"] / ref["seconds"]
        row["cpu_ratio_vs_torch_fidelity"] = row["cpu_seconds"] / ref["cpu_seconds"]
        row["same_decisions"] = tuple(row["counts"]) == tuple(ref["counts"])
        part = best.get("torch-fidelity-part")
        if part is not None:
            row["cpu_ratio_vs_torch_fidelity_part"] = row["cpu_seconds"] / part["cpu_seconds"]
        print(
            f"  {row['mode']}: {row['wall_ratio_vs_torch_fidelity']:.2f}x torch-fidelity wall time, "
            f"{row['cpu_ratio_vs_torch_fidelity']:.2f}x CPU time (vs part mode: "
            f"{row.get('cpu_ratio_vs_torch_fidelity_part', float('nan')):.2f}x), "
            f"same counts: {row['same_decisions']}",
            flush=True,
        )
    return rows


def bench_fid() -> dict:
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    from metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    stats = []
    for scale in (1.0, 1.3):
        x = rng.normal(size=(4096, 2048)) * scale
        stats.append((x.mean(0), np.cov(x, rowvar=False)))
    (m1, s1), (m2, s2) = stats
    t = time.perf_counter()
    ours = frechet_distance(m1, s1, m2, s2)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    t_theirs = time.perf_counter() - t
    out = {
        "ours_s": t_ours,
        "torch_fidelity_s": t_theirs,
        "ours": ours,
        "torch_fidelity": theirs["frechet_inception_distance"],
    }
    print(
        f"fid from stats (2048-d): ours {t_ours:.2f} s, torch-fidelity {t_theirs:.2f} s "
        f"({ours:.9g} vs {out['torch_fidelity']:.9g})",
        flush=True,
    )
    return out


def bench_extraction(n_images: int) -> dict:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.utils import get_featuresdict_from_dataset

    from metrics import create_extractor
    from metrics.testing import make_random_inception

    path = make_random_inception(tempfile.mkdtemp())
    images = torch.randint(0, 256, (n_images, 3, 64, 64), dtype=torch.uint8)
    ex = create_extractor("inception-v3-compat", path)
    ex(images[:2])  # warm-up
    t = time.perf_counter()
    ex(images)
    t_ours = time.perf_counter() - t

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return n_images

        def __getitem__(self, i):
            return images[i]

    model = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
    )
    t = time.perf_counter()
    get_featuresdict_from_dataset(Images(), model, 64, False, True, False)
    t_theirs = time.perf_counter() - t
    out = {"ours_images_per_s": n_images / t_ours, "torch_fidelity_images_per_s": n_images / t_theirs}
    print(
        f"extraction ({n_images} images 64x64 -> 299): ours {out['ours_images_per_s']:.2f} img/s, "
        f"torch-fidelity {out['torch_fidelity_images_per_s']:.2f} img/s",
        flush=True,
    )
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn):
    c, t = _cpu(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, _cpu() - c


def bench_intervals(n: int, bootstrap_rounds: int) -> dict:
    from metrics import calculate_metrics
    from metrics.bootstrap import bootstrap
    from metrics.fid import factor, gaussian_statistics, trace_sqrt_product
    from metrics.influence import fid_influence, inception_score_influence
    from metrics.prc import knn_radii
    from metrics.reference import ReferenceStats

    gen_t, real_t = _features(n, 0)
    gen, real = gen_t.numpy(), real_t.numpy()
    rng = np.random.default_rng(0)
    g = {
        "pool": gen,
        "logits_unbiased": rng.normal(size=(n, 1008)).astype(np.float32) * 3,
        "clip_scores": rng.normal(30, 3, n),
    }
    mu_r, sig_r = gaussian_statistics(real)
    ref = ReferenceStats(
        mu=mu_r, sigma=sig_r, n=n, pool=real, radii=knn_radii(real_t).numpy(), meta={"k": 3, "prc_batch_size": 10000}
    )
    names = ["fid", "is", "precision", "recall", "clip_score"]
    out: dict = {"n": n, "d": gen.shape[1]}
    point, out["points_s"], out["points_cpu_s"] = _timed(lambda: calculate_metrics(g, ref, names=names))
    full, out["with_intervals_s"], out["with_intervals_cpu_s"] = _timed(
        lambda: calculate_metrics(g, ref, names=names, ci=True)
    )
    assert all(full[m] == point[m] for m in names), "intervals changed a point estimate"
    out["intervals_s"] = out["with_intervals_s"] - out["points_s"]
    out["intervals_cpu_s"] = out["with_intervals_cpu_s"] - out["points_cpu_s"]
    mu_g, sig_g = gaussian_statistics(gen)
    _, out["fid_influence_s"], _ = _timed(lambda: fid_influence(gen, mu_g, sig_g, mu_r, sig_r))
    _, out["is_influence_s"], _ = _timed(lambda: inception_score_influence(g["logits_unbiased"]))
    out["values"] = {k: full[k] for k in full if k.split("_")[0] in {"fid", "is", "precision", "recall", "clip"}}
    print(
        f"intervals n={n}: points {out['points_s']:.1f} s ({out['points_cpu_s']:.1f} CPU), with every "
        f"interval {out['with_intervals_s']:.1f} s ({out['with_intervals_cpu_s']:.1f} CPU): intervals "
        f"{out['intervals_s']:.1f} s wall, {out['intervals_cpu_s']:.1f} s CPU (FID influence "
        f"{out['fid_influence_s']:.1f} s, IS {out['is_influence_s']:.2f} s)",
        flush=True,
    )
    if bootstrap_rounds:
        root, tr_r, pool = factor(sig_r), np.trace(sig_r), gen.astype(np.float64)

        def fid_of(idx):
            mu, sig = gaussian_statistics(pool[idx])
            d = mu - mu_r
            return float(d @ d + tr_r + np.trace(sig) - 2 * trace_sqrt_product(root, sig))

        _, t, c = _timed(lambda: bootstrap(n, fid_of, bootstrap_rounds, 0))
        out["percentile_bootstrap_fid_200_s"] = t / bootstrap_rounds * 200
        out["percentile_bootstrap_fid_200_cpu_s"] = c / bootstrap_rounds * 200
        print(
            f"  today's percentile bootstrap of FID: {t / bootstrap_rounds:.1f} s per round -> "
            f"{out['percentile_bootstrap_fid_200_s']:.0f} s for 200 rounds (FID alone)",
            flush=True,
        )
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    _, out["torch_fidelity_fid_from_stats_s"], _ = _timed(
        lambda: fid_statistics_to_metric({"mu": mu_r, "sigma": sig_r}, {"mu": mu_g, "sigma": sig_g}, False)
    )
    print(f"  torch-fidelity FID from statistics: {out['torch_fidelity_fid_from_stats_s']:.1f} s", flush=True)
    return out


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a spawned child
    inherits from its parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_child(fn_name: str, args: tuple, queue):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out, wall, cpu = _timed(lambda: globals()[fn_name](*args))
    queue.put({**out, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _hwm_mb()})


def _in_child(fn_name: str, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(fn_name, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def _beyond_features(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), (rng.normal(size=(n, d)) * 1.05 + 0.02).astype(np.float32)


def _metric_run(metric: str, n: int) -> dict:
    """One metric (with its interval) on random features of its extractor's width."""
    from metrics import calculate_metrics
    from metrics.features import FeatureAccumulator
    from metrics.reference import reference_from_accumulator

    role, d = {"fd_dinov2": ("dinov2", 1024), "fd_clip": ("clip", 768), "cmmd": ("clip", 768)}.get(
        metric, ("dinov2", 1024)
    )
    gen, real = _beyond_features(n, d, 1)
    acc = FeatureAccumulator(meta={"extractor": role, "extractor_sha256": "0"})
    acc.add_features(real)
    names = ["density", "coverage"] if metric == "density_coverage" else [metric]
    ref, build_s, build_cpu = _timed(lambda: reference_from_accumulator(acc, {}, role=role))
    out, wall, cpu = _timed(
        lambda: calculate_metrics({"pool": gen, "extractor": role, "extractor_sha256": "0"}, ref, names=names, ci=True)
    )
    return {
        "metric": metric,
        "n": n,
        "d": d,
        "metric_s": wall,
        "metric_cpu_s": cpu,
        "reference_cache_s": build_s,
        "reference_cache_cpu_s": build_cpu,
        "values": {k: v for k, v in out.items() if isinstance(v, float)},
    }


def _extractor_run(name: str, weights: str, n_images: int, device: str) -> dict:
    from metrics import create_extractor

    ext = create_extractor(name, weights, device)
    images = torch.randint(0, 256, (n_images, 3, 64, 64), dtype=torch.uint8)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ext(images[:2])  # warm-up
    _, wall, cpu = _timed(lambda: ext(images))
    out = {"extractor": name, "images": n_images, "extract_s": wall, "extract_cpu_s": cpu, "protocol": ext.protocol}
    out["preprocess_s"] = _timed(lambda: ext.pixels(images))[1]
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def bench_beyond(n: int, n_images: int, metrics_n: int, device: str, dinov2_weights, clip_weights) -> dict:
    from metrics.dinov2 import ARCHS
    from metrics.testing import make_random_clip, make_random_dinov2

    out: dict = {"n": n, "device": device, "extractors": [], "metrics": []}
    with tempfile.TemporaryDirectory() as tmp:
        if n_images:
            if not dinov2_weights:
                dinov2_weights = str(
                    make_random_dinov2(Path(tmp) / "dinov2_vitl14_pretrain.pth", ARCHS["dinov2-vit-l-14"])
                )
            if not clip_weights:
                clip_weights = str(make_random_clip(Path(tmp) / "ViT-L-14-336px.pt"))
            for name, weights in (("dinov2-vit-l-14", dinov2_weights), ("clip-vit-l-14-336", clip_weights)):
                row = _in_child("_extractor_run", name, weights, n_images, device)
                row["images_per_s"] = n_images / row["extract_s"]
                row["at_n_s"] = row["extract_s"] * n / n_images
                row["extrapolated"] = n_images != n
                out["extractors"].append(row)
                print(
                    f"{name}: {row['images_per_s']:.2f} images/s ({row['extract_cpu_s'] / n_images:.2f} CPU-s each, "
                    f"preprocessing {row['preprocess_s'] / n_images * 1000:.1f} ms each), peak RSS "
                    f"{row['peak_rss_mb']:.0f} MB -> {row['at_n_s'] / 3600:.2f} h at {n}"
                    + (" (extrapolated)" if row["extrapolated"] else ""),
                    flush=True,
                )
    m = metrics_n or n
    for metric, pairwise in (("fd_dinov2", False), ("fd_clip", False), ("cmmd", True), ("density_coverage", True)):
        row = _in_child("_metric_run", metric, m)
        scale = (n / m) ** 2 if pairwise else 1.0  # FD: d^3 eigendecompositions + n d^2 (linear, small)
        row.update(at_n_s=row["metric_s"] * scale if pairwise else row["metric_s"] * n / m, extrapolated=m != n)
        out["metrics"].append(row)
        print(
            f"{metric} (+ interval) at n={m}: {row['metric_s']:.1f} s ({row['metric_cpu_s']:.1f} CPU-s), reference "
            f"cache {row['reference_cache_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB"
            + (f" -> ~{row['at_n_s']:.0f} s at {n} (extrapolated)" if m != n else ""),
            flush=True,
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="precision/recall sample counts (default 10000)")
    ap.add_argument("--images", type=int, default=32, help="images for the extraction rate (0: skip)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved precision/recall rounds (best kept)")
    ap.add_argument("--no-fid", action="store_true", help="skip the FID-from-statistics timing")
    ap.add_argument(
        "--no-torch-fidelity-prc",
        action="store_true",
        help="skip torch-fidelity's precision/recall (it needs ~15 GB at 30k)",
    )
    ap.add_argument("--intervals", type=int, default=0, help="time every interval at this N (0: skip)")
    ap.add_argument(
        "--bootstrap-rounds",
        type=int,
        default=3,
        help="percentile-bootstrap rounds timed beside the intervals (scaled to 200)",
    )
    ap.add_argument("--no-prc", action="store_true", help="skip the precision/recall comparison")
    ap.add_argument("--beyond", type=int, default=0, help="time the extractors/metrics beyond Inception at N")
    ap.add_argument("--beyond-images", type=int, default=8, help="images run through each extractor")
    ap.add_argument("--beyond-metrics-n", type=int, default=0, help="measure the metrics at this n (0: --beyond)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dinov2-weights", help="dinov2_vitl14_pretrain.pth (default: random, official format)")
    ap.add_argument("--clip-image-weights", help="ViT-L-14-336px.pt (default: random, OpenAI format)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.images:
        results["extraction"] = bench_extraction(args.images)
    if not args.no_fid:
        results["fid"] = bench_fid()
    modes = (
        ("ours", "ours-cached")
        if args.no_torch_fidelity_prc
        else ("torch-fidelity", "torch-fidelity-part", "ours", "ours-cached")
    )
    if args.intervals:
        results["intervals"] = bench_intervals(args.intervals, args.bootstrap_rounds)
    if args.beyond:
        results["beyond"] = bench_beyond(
            args.beyond,
            args.beyond_images,
            args.beyond_metrics_n,
            args.device,
            args.dinov2_weights,
            args.clip_image_weights,
        )
    if not args.no_prc:
        results["prc"] = [row for n in (args.n or [10000]) for row in bench_prc(n, args.repeat, modes)]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
