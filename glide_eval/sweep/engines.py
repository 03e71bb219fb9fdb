"""The built-in sweep engines: `glide` (released checkpoints, Inception, CLIP ViT-B/16,
MS-COCO) and `toy` (the bundled toy world), as `Components` over `samplers` and `metrics`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from glide_eval import toy  # registers the toy extractors with metrics
from glide_eval.sweep import references
from glide_eval.sweep.components import (
    Components,
    ComputeDifferences,
    ComputeMetrics,
    Featurize,
    Generate,
    check_resolution,
    needs_reference,
    needs_upsampler,
)
from glide_eval.sweep.config import SweepConfig
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.toy import models as toy_models
from metrics.calculate import Options, calculate_metrics
from metrics.clip_score import clip_scores
from metrics.extractors import CLIP_B16, INCEPTION, ExtractorError, check_known_weights, create_extractor
from metrics.paired import paired_differences
from metrics.reference import build_reference
from samplers.model_configs import OFFICIAL_FILES
from samplers.pipeline import convert_models, load_glide_models, sample_images
from storage import cache_dir, cached_sha256


def build_components(config: SweepConfig, device: str) -> Components:
    """The configured engine's `Components`: glide, toy, or a `python:MODULE:FACTORY` factory."""
    engine = config.models.engine
    if engine.startswith("python:"):
        _, module, attr = engine.split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise MissingComponentError(f"[models.engine] cannot load {module}:{attr}: {e}") from None
        return factory(config, device)
    if engine == "toy":
        return toy_components(config, device)
    return glide_components(config, device)


def glide_checkpoints(config: SweepConfig) -> dict[str, str]:
    """label -> official checkpoint name (samplers.model_configs.OFFICIAL_FILES) of the files a
    GLIDE sweep loads; {} with random weights."""
    if config.engine_options.get("random_weights"):
        return {}
    names = {"base": "base"}
    if needs_upsampler(config):
        names["upsample"] = "upsample"
    if config.clip_guided:
        names.update({"clip_image_enc": "clip/image-enc", "clip_text_enc": "clip/text-enc"})
    return names


def glide_files(config: SweepConfig) -> dict[str, Path]:
    """The checkpoint files a GLIDE sweep needs, by label; a clear error lists what is missing."""
    folder = config.models.checkpoints
    names = glide_checkpoints(config)
    if not names:
        return {}
    if not folder:
        raise MissingComponentError(
            "[models.checkpoints] GLIDE checkpoint folder not set: set GLIDE_CHECKPOINTS or models.checkpoints"
        )
    files = {label: Path(folder) / OFFICIAL_FILES[name] for label, name in names.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise MissingComponentError("[models.checkpoints] missing GLIDE checkpoint files: " + ", ".join(missing))
    return files


def pipeline_generator(config: SweepConfig, device: str, load_models: Callable[[bool, bool], object]) -> Generate:
    """generate() through `samplers.pipeline.sample_images`; `load_models(upsample, clip)`
    gives the `GlideModels`, called on first use."""
    sampler, run = config.sampler, config.run
    upsample = needs_upsampler(config)
    dtype = getattr(torch, run.dtype)
    loaded = []

    def generate(captions, sample_ids, setting):
        if not loaded:  # converted once to [run] dtype, not autocast at every step
            loaded.append(convert_models(load_models(upsample, config.clip_guided), dtype))
        _, method, respacing = setting.sampling(config)  # a "steps" setting's own, else [sampler]'s
        result = sample_images(
            loaded[0],
            captions,
            sample_ids,
            run.seed,
            guidance=setting.guidance,
            respacing=respacing,
            sampler=method,
            sampler_options=config.sampler_options.get(method),
            upsample=upsample,
            upsample_respacing=sampler.upsample_respacing,
            upsample_temp=sampler.upsample_temperature,
            batch_size=len(captions),
            device=device,
            dtype=dtype,
        )
        return result.images, np.asarray(result.nan_steps, dtype=np.int64)

    return generate


def glide_generator(config: SweepConfig, device: str) -> Generate:
    """generate() for the released GLIDE models (or, with [engine_options] random_weights = true,
    random-weight ones: a smoke test of a machine without checkpoints)."""
    options = config.engine_options
    random = {k: options[k] for k in ("random_weights", "tiny") if k in options}

    def load(upsample, clip):
        return load_glide_models(
            config.models.checkpoints or None, upsample=upsample, clip=clip, device=device, **random
        )

    return pipeline_generator(config, device, load)


def metrics_featurizer(extractor, clip=None) -> Featurize:
    """featurize() over `metrics` extractors: pool features, unbiased logits, CLIP scores."""

    def featurize(images, captions):
        batch = torch.from_numpy(np.ascontiguousarray(images))
        out = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in extractor(batch).items()}
        if clip is not None:
            out["clip_scores"], n_truncated = clip_scores(clip, batch, list(captions))
            if n_truncated and hasattr(clip, "count_truncated"):
                out["clip_truncated"] = np.array([clip.count_truncated([c]) for c in captions], np.int64)
            else:
                out["clip_truncated"] = np.zeros(len(captions), np.int64)
        return out

    return featurize


def once(make: Callable[[], object]) -> Callable[[], object]:
    """make() on the first call; the same object on every later call."""
    made = []

    def get():
        if not made:
            made.append(make())
        return made[0]

    return get


def metrics_computer(config: SweepConfig, extractor, reference: Callable[[], object]) -> ComputeMetrics:
    """compute_metrics() through `metrics.calculate_metrics` against `reference()` (see `once`)."""
    names = list(config.metrics.names)
    needs_ref = needs_reference(config)

    def compute_metrics(features, captions, ci):
        gen = generated_features(features, extractor)
        out = calculate_metrics(
            gen,
            reference() if needs_ref else None,
            names=names,
            ci=ci,
            isc_splits=min(10, len(features["pool"])),  # 10 splits, as the paper; fewer for tiny runs
            seed=config.run.seed,
        )
        return {k: float(v) for k, v in out.items()}

    return compute_metrics


def generated_features(features: dict, extractor) -> dict:
    """A setting's merged shard features as `metrics.calculate_metrics` takes them."""
    return {
        "pool": features["pool"],
        "logits_unbiased": features.get("logits_unbiased"),
        "clip_scores": features.get("clip_scores"),
        "n_truncated": int(features.get("clip_truncated", np.zeros(1)).sum()),
        "extractor": extractor.name,
        "extractor_sha256": extractor.weights_sha256,
    }


def differences_computer(config: SweepConfig, extractor, reference: Callable[[], object]) -> ComputeDifferences:
    """compute_differences() through `metrics.paired_differences`, with the options and seeds
    `metrics_computer` uses (so "a" and "b" are the settings' own values on those samples)."""
    names = list(config.metrics.names)
    needs_ref = needs_reference(config)

    def compute_differences(features_a, features_b, comparisons):
        options = Options(isc_splits=min(10, len(features_a["pool"])), fid_infinity_seed=config.run.seed)
        return paired_differences(
            generated_features(features_a, extractor),
            generated_features(features_b, extractor),
            reference() if needs_ref else None,
            names,
            comparisons=comparisons,
            options=options,
        )

    return compute_differences


TOY_EXTRACTORS = ("toy-classifier", "toy-clip")


def toy_components(config: SweepConfig, device: str) -> Components:
    """The bundled toy world: trained toy GLIDE models, toy evaluation networks, reference
    statistics of the toy validation images at the sample resolution."""
    check_resolution(config)
    upsample, clip_guided = needs_upsampler(config), config.clip_guided
    names = ["base"] + (["upsample"] if upsample else []) + (["noised_clip"] if clip_guided else [])
    folder = config.models.checkpoints or None  # default: the shipped weights
    try:
        files = {f"toy_{name}": cached_sha256(toy_models.weight_path(name, folder)) for name in names}
    except FileNotFoundError as e:
        raise MissingComponentError(f"the toy world's trained models are missing: {e}") from None
    extractor = _create_extractor(TOY_EXTRACTORS[0], "", device, "models.engine")  # bundled weights
    clip = None
    if "clip_score" in config.metrics.names:
        clip = _create_extractor(TOY_EXTRACTORS[1], "", device, "models.engine")
        files["toy_clip"] = clip.weights_sha256
    files["toy_classifier"] = extractor.weights_sha256

    def load(upsample, clip):
        return toy_models.load_toy_models(folder, upsample=upsample, clip=clip, device=device)

    resolution = config.sampler.resolution
    n_ref = config.metrics.reference_n or config.captions.n
    seed = config.captions.seed
    default = cache_dir() / "references" / f"toy-validation-{resolution}px-{n_ref}-seed{seed}-{extractor.name}.npz"
    meta = {"dataset": "toy-validation", "resolution": resolution, "n_images": n_ref, "world_seed": seed}

    def build():
        batches = (
            toy.dataset(min(500, n_ref - start), "validation", size=resolution, seed=seed, start=start)[0]
            for start in range(0, n_ref, 500)
        )
        return build_reference(batches, extractor, meta)

    provenance = {"files": files}
    given = config.metrics.reference
    reference = recording(
        lambda: references.reference_stats(given, default, references.toy_expected(extractor, **meta), build),
        provenance,
        given,
    )
    return Components(
        pipeline_generator(config, device, load),
        metrics_featurizer(extractor, clip),
        metrics_computer(config, extractor, reference),
        provenance=provenance,
        reference=reference,
        compute_differences=differences_computer(config, extractor, reference),
    )


def recording(load: Callable[[], object], provenance: dict, given: str) -> Callable[[], object]:
    """`once(load)` that also records the reference's metadata in `provenance["reference"]`."""

    def load_and_record():
        stats = load()
        provenance["reference"] = references.recorded(stats, given)
        return stats

    return once(load_and_record)


def _create_extractor(name: str, weights: str, device: str, key: str):
    try:
        return create_extractor(name, weights or None, device=device)
    except ExtractorError as e:
        raise MissingComponentError(f"[{key}] {e}") from None


def _check_known_inception(extractor) -> None:
    """MissingComponentError unless the Inception weights are torch-fidelity's file (by sha256)."""
    try:
        check_known_weights(extractor)
    except ExtractorError as e:
        raise MissingComponentError(
            f"[weights.inception] {e} (sweep: --allow-unknown-inception, or [weights] allow_unknown_inception = true)"
        ) from None


def glide_components(config: SweepConfig, device: str) -> Components:
    """The released GLIDE models, Inception and CLIP ViT-B/16, MS-COCO reference statistics.
    Every missing file is reported at once (one MissingComponentError, one line each)."""
    check_resolution(config)
    errors: list[str] = []
    files = collect(errors, lambda: {k: cached_sha256(path) for k, path in glide_files(config).items()}) or {}
    inception = config.weights.inception
    extractor = collect(errors, lambda: _create_extractor(INCEPTION, inception, device, "weights.inception"))
    if extractor is not None and not config.weights.allow_unknown_inception:
        collect(errors, lambda: _check_known_inception(extractor))
    clip = None
    if "clip_score" in config.metrics.names:
        clip = collect(errors, lambda: _create_extractor(CLIP_B16, config.weights.clip, device, "weights.clip"))
    if errors:
        raise MissingComponentError("\n".join(errors))
    if clip is not None:
        files["clip_vit_b16"] = clip.weights_sha256
    files["inception"] = extractor.weights_sha256
    provenance = {"files": files}
    given = config.metrics.reference
    reference = recording(lambda: references.coco_reference_stats(config, extractor), provenance, given)
    return Components(
        glide_generator(config, device),
        metrics_featurizer(extractor, clip),
        metrics_computer(config, extractor, reference),
        provenance=provenance,
        reference=reference,
        compute_differences=differences_computer(config, extractor, reference),
    )


def collect(errors: list[str], make: Callable[[], object]):
    """make(), or None with its MissingComponentError's message appended to `errors`."""
    try:
        return make()
    except MissingComponentError as e:
        errors.append(str(e))
        return None
