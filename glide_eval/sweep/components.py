"""What a sweep composes: a generator, a featurizer and a metric computer.

A sweep only talks to these three callables (see `Components`); `engines.build_components`
makes them for the configured engine:

- ``glide``: the released GLIDE checkpoints (`samplers`) and the real feature extractors
  and reference statistics (`metrics`) (see `glide_eval.sweep.engines`);
- ``toy``: the bundled toy world (`glide_eval.toy`) with its toy extractors;
- ``python:MODULE:FACTORY``: ``FACTORY(config, device) -> Components`` from any module,
  for other models or for testing the orchestration.

Factories must be cheap: load models lazily, on the first call to `generate`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from glide_eval.sweep.config import Setting, SweepConfig
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.toy.models import BASE_RESOLUTION, UPSAMPLED_RESOLUTION
from metrics.names import REFERENCE_NAMES

# generate(captions, sample_ids, setting) -> images uint8 [N,3,H,W] or (images, nan_counts)
# (sample with setting.guidance and setting.sampling(config): a "steps" setting's own method/respacing)
Generate = Callable[[list[str], list[int], Setting], object]
# featurize(images uint8 [N,3,H,W], captions) -> {name: array [N, ...]}
Featurize = Callable[[np.ndarray, list[str]], dict]
# compute_metrics(features {name: [N, ...]}, captions, ci) -> {metric: float}
ComputeMetrics = Callable[[dict, list[str], bool], dict]
# compute_differences(features_a, features_b, comparisons) -> `metrics.paired_differences`'s
# {metric: {"a", "b", "difference" (b - a), "se", "ci_low", "ci_high", ...}} (rows paired by sample index)
ComputeDifferences = Callable[[dict, dict, int], dict]
GLIDE_RESOLUTIONS = (64, 256)  # base, with the upsampler
TOY_RESOLUTIONS = (BASE_RESOLUTION, UPSAMPLED_RESOLUTION)


@dataclass
class Components:
    generate: Generate
    featurize: Featurize
    compute_metrics: ComputeMetrics
    # {"files": {label: sha256}, "versions": {package: version}}; recorded with every result
    provenance: dict = field(default_factory=dict)
    # reference() -> the reference statistics (built or loaded once); the pre-flight calls it
    # before any sample is drawn. None: the engine has no reference (or builds it in compute_metrics)
    reference: Callable[[], object] | None = None
    # paired differences between two settings' features; None: the report has no difference table
    compute_differences: ComputeDifferences | None = None


REFERENCE_METRICS = REFERENCE_NAMES


def needs_reference(config: SweepConfig) -> bool:
    """Whether the configured metrics are measured against reference statistics."""
    return bool(REFERENCE_METRICS & set(config.metrics.names))


def resolve_device(config: SweepConfig) -> str:
    """'cpu' or 'cuda:LOCAL_RANK' for the configured device."""
    wanted = config.run.device
    if wanted == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if wanted == "cuda":
            raise MissingComponentError("[run.device] = 'cuda' but no CUDA device is available")
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def apply_tf32(enabled: bool) -> bool:
    """Set TF32 for CUDA matmuls and cuDNN convolutions explicitly (torch's defaults differ
    between the two and between versions); returns `enabled`, for the provenance. Off keeps
    float32 results comparable with a CPU's."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def engine_resolutions(engine: str) -> tuple[int, int] | None:
    """(base, upsampled) image sizes of a built-in engine; None for python: engines."""
    return {"glide": GLIDE_RESOLUTIONS, "toy": TOY_RESOLUTIONS}.get(engine)


def needs_upsampler(config: SweepConfig) -> bool:
    """True when [sampler.resolution] is the engine's upsampled size (python: engines: 256)."""
    sizes = engine_resolutions(config.models.engine)
    return config.sampler.resolution == (sizes[1] if sizes else GLIDE_RESOLUTIONS[1])


def check_resolution(config: SweepConfig) -> None:
    engine = config.models.engine
    base, upsampled = engine_resolutions(engine)
    if config.sampler.resolution not in (base, upsampled):
        raise MissingComponentError(
            f"[sampler.resolution] the {engine} engine makes {base}px (base model) or {upsampled}px "
            f"(with the upsampler) images, not {config.sampler.resolution}px"
        )
