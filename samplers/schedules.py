"""Beta schedules and timestep respacing (GLIDE / guided-diffusion semantics, float64).

`named_betas("squaredcos_cap_v2" | "linear")` gives the 1000-step training schedule;
`space_timesteps(1000, "100" | "10,10,3,2,2" | "ddim50" | "fast27" | "")` picks the
original timesteps a respaced sampler visits (sorted list).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")


def cosine_alpha_bar(t: float) -> float:
    """alpha_bar(t) of the squared-cosine schedule (Nichol & Dhariwal 2021), t in [0, 1]."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha_bar(t): beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T), capped."""
    betas = [min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return np.array(betas, dtype=np.float64)


def named_betas(name: str, num_steps: int = 1000) -> np.ndarray:
    """The named beta schedule as a float64 array of `num_steps` betas."""
    if name == "linear":
        scale = 1000 / num_steps  # Ho et al.'s 1e-4..2e-2, stretched to any step count
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_steps, cosine_alpha_bar)
    raise ValueError(f"unknown beta schedule {name!r}; known: {', '.join(BETA_SCHEDULES)}")


def _section_steps(num_steps: int, section_counts: list[int]) -> set[int]:
    size_per, extra = divmod(num_steps, len(section_counts))
    start, steps = 0, set()
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if count < 0 or size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.add(start + round(position))
            position += stride
        start += size
    return steps


def parse_respacing(spacing: str) -> tuple[str, list[int]]:
    """The one parser of respacing strings: ("all", []) for "", ("fast27", [10, 10, 3, 2, 2]),
    ("ddim", [N]) for "ddimN", ("sections", [a, b, ...]) for "N" or "a,b,...".

    ValueError names the string when it is none of these.
    """
    spec = spacing.strip()
    if spec == "":
        return ("all", [])
    if spec == "fast27":
        return ("fast27", [10, 10, 3, 2, 2])
    if spec.startswith("ddim"):
        count = spec[len("ddim") :]
        if not count.isdigit():
            raise ValueError(f"bad respacing {spacing!r}: expected 'ddimN' with an integer N")
        return ("ddim", [int(count)])
    parts = spec.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"unknown respacing {spacing!r}: expected 'N', 'N1,N2,...', 'ddimN', 'fast27' or ''")
    return ("sections", [int(p) for p in parts])


def count_steps(spacing: str) -> int:
    """Denoising steps of a respacing string, whatever the schedule's length: "250" -> 250,
    "fast27" -> 27, "ddim50" -> 50, "10,10,5" -> 25. Every count must be positive, and ""
    (every step of the schedule) has no count of its own: both are ValueErrors."""
    kind, counts = parse_respacing(str(spacing))
    if kind == "all" or not all(c > 0 for c in counts):
        raise ValueError(f"respacing must be like '250', 'fast27', 'ddim50' or '10,10,5', got {spacing!r}")
    return sum(counts)


def space_timesteps(num_steps: int, spacing: str | int | Iterable[int]) -> list[int]:
    """Sorted original timesteps kept by a respacing spec.

    Accepts what the reference accepts: "N" or "a,b,c" (N steps, or per-section counts over
    equal sections, evenly strided with rounding), "ddimN" (the integer stride giving exactly
    N steps), "fast27" ("10,10,3,2,2" with T-1 replaced by T-3), an int, a list of counts, and
    "" (every step). Strings go through `parse_respacing`.
    """
    if isinstance(spacing, int):
        return sorted(_section_steps(num_steps, [spacing]))
    if not isinstance(spacing, str):
        return sorted(_section_steps(num_steps, [int(c) for c in spacing]))
    kind, counts = parse_respacing(spacing)
    if kind == "all":
        return list(range(num_steps))
    if kind == "fast27":
        steps = _section_steps(num_steps, counts)
        steps.remove(num_steps - 1)
        steps.add(num_steps - 3)  # avoids DDIM artifacts from the noisiest step
        return sorted(steps)
    if kind == "ddim":
        desired = counts[0]
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == desired:
                return list(range(0, num_steps, stride))
        raise ValueError(f"respacing {spacing!r}: no integer stride gives exactly {desired} of {num_steps} steps")
    return sorted(_section_steps(num_steps, counts))


def respaced_betas(betas: np.ndarray, timesteps: Iterable[int]) -> np.ndarray:
    """Betas of the process that jumps between the kept timesteps, preserving alphas_cumprod there."""
    keep = set(timesteps)
    alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    new_betas, last = [], 1.0
    for i, alpha_cumprod in enumerate(alphas_cumprod):
        if i in keep:
            new_betas.append(1.0 - alpha_cumprod / last)
            last = alpha_cumprod
    return np.array(new_betas, dtype=np.float64)
