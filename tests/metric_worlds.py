"""Gaussian worlds where every metric's expectation at a given n is computable by repetition.

Used by the interval tests (tests/test_metrics_intervals.py): a fixed reference sample, and generated samples whose
pool features are Gaussian (shifted and scaled), logits a fixed linear map of them (so IS
varies with them) and CLIP scores a noisy linear function of them. `paired_world` draws two
settings from the same per-row latent (same caption and noise), correlated row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class World:
    d: int = 16
    n: int = 400
    n_ref: int = 600
    shift: float = 0.3
    scale: float = 1.2
    classes: int = 10
    seed: int = 0

    def reference(self) -> dict:
        rng = np.random.default_rng(self.seed)
        return {"pool": rng.normal(size=(self.n_ref, self.d)).astype(np.float32)}

    def weights(self) -> np.ndarray:
        return np.random.default_rng(self.seed + 1).normal(size=(self.d, self.classes)) / np.sqrt(self.d) * 2

    def features(self, latent: np.ndarray, noise: np.ndarray, shift: float, scale: float) -> dict:
        pool = (latent * scale + shift).astype(np.float32)
        return {
            "pool": pool,
            "logits_unbiased": (pool @ self.weights()).astype(np.float32),
            "clip_scores": 25 + 2 * pool[:, 0] + noise,
        }

    def draw(self, rng: np.random.Generator) -> dict:
        return self.features(rng.normal(size=(self.n, self.d)), rng.normal(size=self.n), self.shift, self.scale)


def paired_draw(
    world: World, rng: np.random.Generator, shift_b: float, scale_b: float, independent: float = 0.2
) -> tuple[dict, dict]:
    """Settings A (world.shift/scale) and B (shift_b/scale_b) from one latent per row plus a
    little independent noise (`independent` of its variance)."""
    common = rng.normal(size=(world.n, world.d))
    noise = rng.normal(size=world.n)
    own = np.sqrt(independent)
    keep = np.sqrt(1 - independent)
    a = world.features(keep * common + own * rng.normal(size=common.shape), noise, world.shift, world.scale)
    b = world.features(keep * common + own * rng.normal(size=common.shape), noise, shift_b, scale_b)
    return a, b


# the two worlds whose interval coverage the slow tests hold to 90-98% with 400 runs
SLOW_WORLDS = (World(d=16, n=400, shift=0.3, scale=1.2), World(d=32, n=1000, shift=0.2, scale=1.1))
SLOW_WORLD_IDS = ("d16n400", "d32n1000")
