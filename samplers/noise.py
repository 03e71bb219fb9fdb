"""Noise sources for the samplers.

A noise source gives the initial x_T (`initial(shape, device)`) and then one unit-Gaussian
draw per call (`source(x)`, shaped like x). `PerSampleNoise` draws each row from its own
generator seeded by (seed, stream, sample id), so a sample's noise does not depend on its
batch-mates, the batch size or the number of processes. `TapeNoise` replays recorded noise
(e.g. a reference run's `noise_tape`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def sample_seed(seed: int, sample_id, stream: str = "base") -> int:
    """A stable 63-bit generator seed for one sample of one stream (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class PerSampleNoise:
    """Row r of every draw comes from a CPU generator seeded by (seed, stream, sample_ids[r]).

    Draws are made on the CPU in float32 and moved to the requested device, so they are the
    same on every machine.
    """

    def __init__(self, seed: int, sample_ids: Sequence, stream: str = "base"):
        self.sample_ids = list(sample_ids)
        self.generators = []
        for sample_id in self.sample_ids:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(sample_seed(seed, sample_id, stream))
            self.generators.append(generator)

    def _draw(self, shape, device) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} rows requested from a source of {len(self.generators)} samples")
        rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(rows).to(device)

    def initial(self, shape, device="cpu") -> torch.Tensor:
        return self._draw(shape, device)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        return self._draw(like.shape, like.device).to(like.dtype)


class TapeNoise:
    """Replays `tape[0]` as x_T and `tape[1], tape[2], ...` as the successive draws.

    `rows` selects the rows used (e.g. `slice(0, n)` to take the conditional half of a
    reference run recorded on a doubled batch).
    """

    def __init__(self, tape: Sequence[torch.Tensor], rows=slice(None)):
        self.tape = list(tape)
        self.rows = rows
        self.position = 1

    def initial(self, shape, device="cpu") -> torch.Tensor:
        first = self.tape[0][self.rows]
        if tuple(first.shape) != tuple(shape):
            raise ValueError(f"noise tape x_T has shape {tuple(first.shape)}, expected {tuple(shape)}")
        return first.to(device)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if self.position >= len(self.tape):
            raise IndexError(f"noise tape exhausted after {len(self.tape) - 1} draws")
        draw = self.tape[self.position][self.rows]
        self.position += 1
        return draw.to(device=like.device, dtype=like.dtype)


class GlobalNoise:
    """Draws from torch's global (or a given) generator, like the reference code."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def initial(self, shape, device="cpu") -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=device)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)
