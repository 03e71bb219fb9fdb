"""What a sweep composes: a generator, a featurizer and a metric computer.

A sweep only talks to these three callables (see `Components`); `build_components`
makes them for the configured engine:

- ``glide``: the released GLIDE checkpoints (`samplers`) and the real feature extractors
  and reference statistics (`metrics`) (see `sweep_engines`);
- ``toy``: the bundled toy world (`glide_eval.toy`) with its toy extractors;
- ``python:MODULE:FACTORY``: ``FACTORY(config, device) -> Components`` from any module,
  for other models or for testing the orchestration.

Factories must be cheap: load models lazily, on the first call to `generate`.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from glide_eval.config import Setting, SweepConfig
from samplers.checkpoints import sha256_file  # noqa: F401  (re-exported for the sweep store)


class MissingComponentError(RuntimeError):
    """A model, weight file, data set or package the sweep needs is not there."""


# generate(captions, sample_ids, setting) -> images uint8 [N,3,H,W] or (images, nan_counts)
# (sample with setting.guidance and setting.sampler(config): a "steps" setting's own method/respacing)
Generate = Callable[[list[str], list[int], Setting], object]
# featurize(images uint8 [N,3,H,W], captions) -> {name: array [N, ...]}
Featurize = Callable[[np.ndarray, list[str]], dict]
# compute_metrics(features {name: [N, ...]}, captions, ci) -> {metric: float}
ComputeMetrics = Callable[[dict, list[str], bool], dict]


@dataclass
class Components:
    generate: Generate
    featurize: Featurize
    compute_metrics: ComputeMetrics
    # {"files": {label: sha256}, "versions": {package: version}}; recorded with every result
    provenance: dict = field(default_factory=dict)


def resolve_device(config: SweepConfig) -> str:
    """'cpu' or 'cuda:LOCAL_RANK' for the configured device."""
    wanted = config["run"]["device"]
    if wanted == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if wanted == "cuda":
            raise MissingComponentError("[run.device] = 'cuda' but no CUDA device is available")
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def build_components(config: SweepConfig, device: str) -> Components:
    engine = config["models"]["engine"]
    if engine.startswith("python:"):
        _, module, attr = engine.split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise MissingComponentError(f"[models.engine] cannot load {module}:{attr}: {e}") from None
        return factory(config, device)
    from glide_eval import sweep_engines

    if engine == "toy":
        return sweep_engines.toy_components(config, device)
    return sweep_engines.glide_components(config, device)


def load_captions(config: SweepConfig) -> list[str]:
    """The sweep's N captions, in sample-index order."""
    cap = config["captions"]
    n = cap["n"]
    if cap["source"] == "file":
        path = Path(cap["path"])
        if not cap["path"] or not path.is_file():
            raise MissingComponentError(f"[captions.path] caption file not found: {cap['path']!r}")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(lines) < n:
            raise MissingComponentError(f"[captions.n] = {n} but {path} has only {len(lines)} captions")
        rng = np.random.default_rng(cap["seed"])
        return [lines[i] for i in sorted(rng.choice(len(lines), size=n, replace=False))]
    if cap["source"] == "coco":
        coco = _import("glide_eval.coco", "MS-COCO caption sampling (glide_eval/coco.py)")
        if not cap["path"]:
            raise MissingComponentError(
                "[captions.path] MS-COCO folder not set: set GLIDE_EVAL_COCO or captions.path")
        try:
            return list(coco.sample_captions(cap["path"], n=n, seed=cap["seed"]))
        except coco.CocoError as e:
            raise MissingComponentError(f"[captions.path] {e}") from None
    toy = _import("glide_eval.toy", "the toy world (glide_eval/toy)")
    return list(toy.sample_captions(n=n, seed=cap["seed"]))


def _import(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingComponentError(f"{what} is not available: {e}") from None


def package_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("glide-eval", "torch", "numpy", "torch-fidelity", "open-clip-torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered by (path, size, mtime) in `cache_dir()`/sha256.json."""
    import json

    path = Path(path).resolve()
    stat = path.stat()
    cache_file = cache_dir() / "sha256.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = sha256_file(path)
        try:
            from glide_eval.sweep_store import write_json

            write_json(cache_file, cache)
        except OSError:
            pass  # a read-only home only costs re-hashing next time
    return cache[key]


def cache_dir() -> Path:
    """$GLIDE_EVAL_CACHE, else ~/.cache/glide-eval (shared with glide_eval.coco)."""
    return Path(os.environ.get("GLIDE_EVAL_CACHE", Path.home() / ".cache" / "glide-eval"))


GLIDE_RESOLUTIONS = (64, 256)  # base, with the upsampler


def engine_resolutions(engine: str) -> tuple[int, int] | None:
    """(base, upsampled) image sizes of a built-in engine; None for python: engines."""
    if engine == "glide":
        return GLIDE_RESOLUTIONS
    if engine == "toy":
        try:
            from glide_eval.toy.models import BASE_RESOLUTION, UPSAMPLED_RESOLUTION
        except ImportError as e:
            raise MissingComponentError(f"the toy world (glide_eval/toy) is not available: {e}") from None
        return BASE_RESOLUTION, UPSAMPLED_RESOLUTION
    return None


def needs_upsampler(config: SweepConfig) -> bool:
    """True when [sampler.resolution] is the engine's upsampled size (python: engines: 256)."""
    sizes = engine_resolutions(config["models"]["engine"])
    return config["sampler"]["resolution"] == (sizes[1] if sizes else GLIDE_RESOLUTIONS[1])


def check_resolution(config: SweepConfig) -> None:
    engine = config["models"]["engine"]
    base, upsampled = engine_resolutions(engine)
    if config["sampler"]["resolution"] not in (base, upsampled):
        raise MissingComponentError(
            f"[sampler.resolution] the {engine} engine makes {base}px (base model) or {upsampled}px "
            f"(with the upsampler) images, not {config['sampler']['resolution']}px")
