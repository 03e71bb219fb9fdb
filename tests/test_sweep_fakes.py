"""A small deterministic engine for testing sweep orchestration (used as
`engine = "python:test_sweep_fakes:make_components"`; no tests of its own besides one check).

Each image depends only on (seed, sample index, caption, guidance setting): a caption colour
plus noise that shrinks as the guidance scale grows, so the metrics move with the scale
the way fidelity/diversity trade-offs do. Features and metrics are plain numpy.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from glide_eval.sweep.components import Components
from glide_eval.sweep.errors import MissingComponentError
from samplers.schedules import count_steps

FAMILY_CODE = {"none": 0, "cfg": 1, "clip": 2}


def caption_colour(caption: str) -> np.ndarray:
    digest = hashlib.sha256(caption.encode()).digest()
    return np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float64)


def fake_image(
    seed: int,
    sample_id: int,
    caption: str,
    family: str,
    scale: float,
    size: int,
    method: str | None = None,
    steps: int = 0,
) -> np.ndarray:
    """`method` and `steps` (sampler overrides of a "steps" setting) change the noise."""
    key = [seed, sample_id, FAMILY_CODE[family], int(round(scale * 1000))]
    if method is not None:
        key += [1 + ("ancestral", "ddim").index(method), steps]
    rng = np.random.default_rng(key)
    noise = rng.normal(0.0, 60.0 / (1.0 + scale) * (1.0 + (8.0 / steps if steps else 0.0)), size=(3, size, size))
    img = caption_colour(caption)[:, None, None] + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def featurize(images: np.ndarray, captions: list[str]) -> dict:
    x = images.astype(np.float64) / 255.0
    return {
        "pool": np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1),
        "text": np.stack([caption_colour(c) / 255.0 for c in captions]),
    }


def compute_metrics(features: dict, captions: list[str], ci: bool) -> dict:
    pool, text = features["pool"], features["text"]
    ref = np.array([0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    mean_gap = float(np.sum((pool.mean(0) - ref) ** 2))
    match = -np.linalg.norm(pool[:, :3] - text, axis=1)
    spread = float(pool[:, 3:].mean())
    return {
        "fid": 100.0 * (mean_gap + abs(spread - 0.1)),
        "is": 1.0 + 10.0 * float(pool[:, :3].std()),
        "precision": float(np.mean(match > -0.1)),
        "recall": float(np.clip(spread * 4.0, 0.0, 1.0)),
        "clip_score": 1.0 + float(match.mean()),
    }


def make_components(config, device: str) -> Components:
    options = config.engine_options
    delay = float(options.get("delay_s", 0.0))
    size = int(options.get("image_size", 8))
    seed = config.run.seed

    def generate(captions, sample_ids, setting):
        time.sleep(delay)
        sampler, (family, scale) = {}, setting.guidance
        if setting.method is not None:  # the sampler this setting asks for (steps, clip_method)
            _, method, respacing = setting.sampling(config)
            sampler = {"method": method, "steps": count_steps(respacing)}
        images = np.stack(
            [fake_image(seed, i, c, family, scale, size, **sampler) for i, c in zip(sample_ids, captions)]
        )
        return images, np.zeros(len(sample_ids), dtype=np.int64)

    reference = None
    if options.get("unreadable_reference"):  # a reference only the pre-flight of rank 0 opens

        def reference():
            raise MissingComponentError(f"[metrics.reference] {options['unreadable_reference']}: cannot be read")

    return Components(
        generate,
        featurize,
        compute_metrics,
        provenance={"files": {"fake_model": "0" * 64}, "versions": {"fake": "1"}},
        reference=reference,
    )


def test_fake_image_depends_only_on_its_inputs():
    a = fake_image(0, 5, "a cat", "cfg", 2.0, 8)
    assert np.array_equal(a, fake_image(0, 5, "a cat", "cfg", 2.0, 8))
    assert not np.array_equal(a, fake_image(0, 6, "a cat", "cfg", 2.0, 8))
    assert not np.array_equal(a, fake_image(0, 5, "a cat", "cfg", 3.0, 8))


def make_tiny_glide_components(config, device: str) -> Components:
    """The real GLIDE pipeline (`samplers`) on tiny random-weight models, with the fake features."""
    from glide_eval.sweep.engines import glide_generator

    return Components(
        glide_generator(config, device), featurize, compute_metrics, provenance={"files": {"tiny_random": "random"}}
    )
