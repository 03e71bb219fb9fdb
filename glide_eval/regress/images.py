"""`regress --images`: pixel comparison of baseline and candidate samples per (caption, seed).

Numerics changes (a kernel, a dtype, a library upgrade) show up here before they move a
metric: the same checkpoint on the same machine must give identical images. Baseline images
come from the baseline run's images/ folder (sweep `--save-images png|npz`); when they are
missing, they are regenerated with the baseline's own config and checkpoints, after checking
that those files still have the sha256 recorded in its run.json. The regenerated run's
features are also compared with the stored ones (does the baseline reproduce here?).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from glide_eval.regress.baseline import Baseline, RegressError, n_rows
from glide_eval.regress.candidate import sample_run
from glide_eval.sweep.components import resolve_device
from glide_eval.sweep.config import Setting, SweepConfig
from glide_eval.sweep.engines import build_components
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.sweep.rundir import RunDir
from metrics.images import read_rgb_chw

LARGEST = 5  # samples listed per setting


def load_run_images(run_dir: Path, setting: str, n: int) -> np.ndarray | None:
    """Images of samples 0..n-1 ([n,3,H,W] uint8) saved by a sweep, or None if any is missing."""
    saved = RunDir(run_dir).saved_images(setting)
    by_id: dict[int, np.ndarray] = {}
    in_npz = (image for image in saved if image.index is not None)
    for path, group in itertools.groupby(in_npz, key=lambda image: image.path):
        with np.load(path) as f:
            images = f["images"]
            by_id.update((image.sample_id, images[image.index]) for image in group)
    for image in saved:
        if image.index is None and image.sample_id < n and image.sample_id not in by_id:
            by_id[image.sample_id] = read_rgb_chw(image.path)
    if not all(i in by_id for i in range(n)):
        return None
    return np.stack([by_id[i] for i in range(n)])


def pixel_differences(base: np.ndarray, cand: np.ndarray, captions: list[str]) -> dict:
    if base.shape != cand.shape:
        return {
            "n": len(base),
            "shape_baseline": list(base.shape),
            "shape_candidate": list(cand.shape),
            "identical": 0,
            "max_abs_diff": None,
            "mean_abs_diff": None,
            "largest": [],
        }
    d = np.abs(base.astype(np.int16) - cand.astype(np.int16)).reshape(len(base), -1)
    per_max, per_mean = d.max(axis=1), d.mean(axis=1)
    order = np.lexsort((-per_mean, -per_max))[:LARGEST]
    return {
        "n": len(base),
        "identical": int((per_max == 0).sum()),
        "max_abs_diff": int(per_max.max()),
        "mean_abs_diff": float(d.mean()),
        "largest": [
            {
                "sample_id": int(i),
                "caption": captions[i],
                "max_abs_diff": int(per_max[i]),
                "mean_abs_diff": float(per_mean[i]),
            }
            for i in order
            if per_max[i] > 0
        ],
    }


def compare_images(
    baseline: Baseline,
    config: SweepConfig,
    settings: list[Setting],
    captions: list[str],
    base_side: dict,
    progress: bool,
    log,
) -> dict:
    n = len(captions)
    sizes = {s.name: n_rows(base_side[s.name]) for s in settings}  # fewer under [grid] steps_n
    base = {s.name: load_run_images(baseline.run_dir, s.name, sizes[s.name]) for s in settings}
    out = {"source": "saved", "reproduction": None, "settings": {}}
    if any(v is None for v in base.values()):
        regen_cfg = baseline.config.with_overrides(
            run={"output_dir": str(config.output_dir.parent / "baseline-images"), "save_images": "none"},
            captions={"n": n},
        )
        log(f"baseline images not saved; regenerating them with the baseline checkpoints into {regen_cfg.output_dir}")
        try:
            components = build_components(regen_cfg, resolve_device(regen_cfg))
        except MissingComponentError as e:
            raise RegressError(f"cannot regenerate the baseline images: {e}") from None
        recorded = baseline.run.get("provenance", {}).get("files", {})
        now = components.provenance.get("files", {})
        if now != recorded:
            changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
            raise RegressError(
                "cannot regenerate the baseline images: files differ from the sha256 recorded in "
                f"{RunDir(baseline.run_dir).run_json}: {', '.join(changed)}; rerun the baseline sweep with "
                "--save-images npz"
            )
        side = sample_run(regen_cfg, components, captions, settings, "png", progress, log)
        out["source"] = "regenerated"
        out["reproduction"] = {
            s.name: {
                name: float(
                    np.max(
                        np.abs(
                            side[s.name]["features"][name].astype(np.float64)
                            - base_side[s.name]["features"][name].astype(np.float64)
                        )
                    )
                )
                for name in base_side[s.name]["features"]
            }
            for s in settings
        }
        base = {s.name: load_run_images(regen_cfg.output_dir, s.name, sizes[s.name]) for s in settings}
    for s in settings:
        cand = load_run_images(config.output_dir, s.name, sizes[s.name])
        if cand is None or base[s.name] is None:
            raise RegressError(f"{s.name}: sample images missing after sampling")
        out["settings"][s.name] = pixel_differences(base[s.name], cand, captions[: sizes[s.name]])
    out["identical"] = all(r["identical"] == r["n"] for r in out["settings"].values())
    return out


def images_markdown(images: dict) -> list[str]:
    lines = [
        "## Images",
        "",
        f"Baseline images: {images['source']}. All identical: **{'yes' if images['identical'] else 'no'}**.",
        "",
    ]
    if images["reproduction"] is not None:
        worst = max((v for r in images["reproduction"].values() for v in r.values()), default=0.0)
        lines += [
            f"Regenerated baseline vs its stored features: largest abs difference {worst:.3g}"
            f" ({'reproduces exactly' if worst == 0 else 'does NOT reproduce bit-exactly here'}).",
            "",
        ]
    lines += [
        "| setting | identical | max abs diff | mean abs diff | largest differences (id: max/mean, caption) |",
        "|---|---|---|---|---|",
    ]
    for name, r in images["settings"].items():
        if r["max_abs_diff"] is None:
            lines.append(
                f"| {name} | 0/{r['n']} | shapes differ: {r['shape_baseline']} vs {r['shape_candidate']} | | |"
            )
            continue
        largest = (
            "; ".join(
                f"{x['sample_id']}: {x['max_abs_diff']}/{x['mean_abs_diff']:.3g} {x['caption']!r}" for x in r["largest"]
            )
            or "-"
        )
        lines.append(
            f"| {name} | {r['identical']}/{r['n']} | {r['max_abs_diff']} | {r['mean_abs_diff']:.4g} | {largest} |"
        )
    return lines
