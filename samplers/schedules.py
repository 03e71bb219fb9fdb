"""Beta schedules and timestep respacing (GLIDE / guided-diffusion semantics, float64).

`named_betas("squaredcos_cap_v2" | "linear")` gives the 1000-step training schedule;
`space_timesteps(1000, "100" | "10,10,3,2,2" | "ddim50" | "fast27" | "")` picks the
original timesteps a respaced sampler visits (sorted list). The time grids of the fast
solvers, "logsnrN" (uniform in lambda = log(alpha / sigma)), "karrasN" (Karras et al.'s
rho = 7 grid in sigma / alpha) and "quadN" (quadratic in t, DPM-Solver's "time_quadratic"),
depend on the schedule and start at `lambda_min` (`DEFAULT_LAMBDA_MIN` per schedule).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")

# The time grids that are spaced by the schedule's log-SNR rather than by index: name -> description.
SOLVER_GRIDS = {
    "logsnr": "uniform in lambda = log(alpha / sigma)",
    "karras": "Karras et al. (EDM): uniform in (sigma / alpha)^(1/7)",
    "quad": "quadratic in t (DPM-Solver's time_quadratic)",
}
KARRAS_RHO = 7.0
# Where a solver grid starts: its noisiest level is at lambda >= lambda_min. For the cosine schedule
# -5.1 (diffusers' `lambda_min_clipped` recommended for squaredcos_cap_v2): the schedule's capped last
# beta (0.999) makes lambda jump from -6.5 at t = 998 to -9.9 at t = 999, and the levels below -5.1
# carry almost no signal (alpha < 0.006). The linear schedule ends at lambda = -5.06: no clip.
DEFAULT_LAMBDA_MIN = {"squaredcos_cap_v2": -5.1, "linear": None}
# The grid recommended for the multistep solvers (the sweep's steps, configs/solvers.toml, docs/solvers.md).
RECOMMENDED_GRID = "logsnr"


class GridWarning(UserWarning):
    """A sampler runs on a time grid that costs it accuracy (the message names the better grid)."""


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
    ("ddim", [N]) for "ddimN", ("logsnr" | "karras" | "quad", [N]) for the solver grids
    "logsnrN", "karrasN", "quadN", ("sections", [a, b, ...]) for "N" or "a,b,...".

    ValueError names the string when it is none of these.
    """
    spec = spacing.strip()
    if spec == "":
        return ("all", [])
    if spec == "fast27":
        return ("fast27", [10, 10, 3, 2, 2])
    for kind in ("ddim", *SOLVER_GRIDS):
        if spec.startswith(kind):
            count = spec[len(kind) :]
            if not count.isdigit():
                raise ValueError(f"bad respacing {spacing!r}: expected '{kind}N' with an integer N")
            return (kind, [int(count)])
    parts = spec.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"unknown respacing {spacing!r}: expected 'N', 'N1,N2,...', 'ddimN', 'logsnrN', 'karrasN', 'quadN', "
            "'fast27' or ''"
        )
    return ("sections", [int(p) for p in parts])


def count_steps(spacing: str) -> int:
    """Denoising steps of a respacing string, whatever the schedule's length: "250" -> 250,
    "fast27" -> 27, "ddim50" -> 50, "logsnr10" -> 10, "10,10,5" -> 25. Every count must be positive, and ""
    (every step of the schedule) has no count of its own: both are ValueErrors."""
    kind, counts = parse_respacing(str(spacing))
    if kind == "all" or not all(c > 0 for c in counts):
        raise ValueError(
            f"respacing must be like '250', 'fast27', 'ddim50', 'logsnr10', 'karras10', 'quad10' or '10,10,5', "
            f"got {spacing!r}"
        )
    return sum(counts)


def grid_kind(spacing: str) -> str:
    """The kind of time grid a respacing string makes: "uniform" (GLIDE's "N" and "a,b,..."), "ddim",
    "fast27", "all" (""), or a solver grid ("logsnr", "karras", "quad")."""
    kind = parse_respacing(str(spacing))[0]
    return "uniform" if kind == "sections" else kind


def log_snr(alphas_cumprod) -> np.ndarray:
    """lambda = log(alpha / sigma) = log(alpha_bar / (1 - alpha_bar)) / 2, float64."""
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


def _grid_lambdas(kind: str, count: int, lam_high: float, lam_low: float) -> np.ndarray:
    """`count` target log-SNRs from lam_low (noisiest) to lam_high, for the lambda-spaced grids."""
    if kind == "logsnr":
        return np.linspace(lam_low, lam_high, count)
    ramp = np.linspace(0.0, 1.0, count)  # karras: sigma / alpha = exp(-lambda), rho-th roots spaced evenly
    root_max, root_min = math.exp(-lam_low / KARRAS_RHO), math.exp(-lam_high / KARRAS_RHO)
    return -KARRAS_RHO * np.log(root_max + ramp * (root_min - root_max))


def solver_grid_timesteps(
    kind: str, count: int, schedule: str, num_steps: int = 1000, lambda_min: float | None = None
) -> list[int]:
    """The sorted timesteps of the solver grid `kind` ("logsnr", "karras", "quad") with `count` steps on
    the `num_steps`-step `schedule`, from t = 0 up to `top`, the last timestep with lambda >= lambda_min
    (None: `DEFAULT_LAMBDA_MIN[schedule]`; no clip when that is None too), both ends included (as
    diffusers' `lambda_min_clipped`: cosine, -5.1 -> t = 995).

    The grid's points are placed in continuous t (lambda interpolated linearly between integer
    timesteps), rounded to the nearest timestep; where rounding makes two equal (the dense low-noise
    end of "quad"), the later ones move up one timestep at a time, so the grid has exactly `count`
    distinct timesteps (ValueError when the clipped range holds fewer)."""
    if kind not in SOLVER_GRIDS:
        raise ValueError(f"unknown solver grid {kind!r}; known: {', '.join(SOLVER_GRIDS)}")
    if count < 1:
        raise ValueError(f"{kind}{count}: a grid needs at least 1 step")
    lam = log_snr(np.cumprod(1.0 - named_betas(schedule, num_steps)))  # decreasing in t
    if lambda_min is None:
        lambda_min = DEFAULT_LAMBDA_MIN.get(schedule)
    top = num_steps - 1 if lambda_min is None else int(np.sum(lam >= float(lambda_min))) - 1
    if top < 0:
        raise ValueError(f"lambda_min {lambda_min} leaves no timesteps of {schedule!r} (lambda(0) = {lam[0]:.2f})")
    if count > top + 1:
        raise ValueError(
            f"{kind}{count}: {schedule!r} has only {top + 1} timesteps with lambda >= {lambda_min}; use fewer steps"
        )
    times = np.arange(num_steps, dtype=np.float64)
    if kind == "quad":
        points = top * np.linspace(0.0, 1.0, count) ** 2
    else:
        points = np.interp(-_grid_lambdas(kind, count, lam[0], lam[top]), -lam, times)
    kept = np.clip(np.rint(np.sort(points)).astype(int), 0, top)
    for k in range(1, count):
        kept[k] = max(kept[k], kept[k - 1] + 1)
    for k in range(count - 1, -1, -1):  # then back under the top
        kept[k] = min(kept[k], top if k == count - 1 else kept[k + 1] - 1)
    return [int(t) for t in kept]


def capped_start_advice(schedule: str, timesteps: Iterable[int], num_steps: int = 1000) -> str | None:
    """Why and how to change a grid that starts at the schedule's capped last beta (cosine: t = 999),
    where lambda jumps by 3.4 in one step and multistep solvers lose their order; None otherwise."""
    timesteps = list(timesteps)
    betas = named_betas(schedule, num_steps)
    first = max(timesteps)
    if betas[first] < 0.999 - 1e-12:
        return None
    return (
        f"the grid starts at t = {first}, the {schedule} schedule's capped last step (lambda jumps from "
        f"{log_snr(np.cumprod(1 - betas))[first - 1]:.1f} to {log_snr(np.cumprod(1 - betas))[first]:.1f}), "
        f"where multistep solvers lose their order; use '{RECOMMENDED_GRID}{len(timesteps)}' "
        f"({SOLVER_GRIDS[RECOMMENDED_GRID]}, clipped at lambda_min = {DEFAULT_LAMBDA_MIN.get(schedule)})"
    )


def space_timesteps(
    num_steps: int,
    spacing: str | int | Iterable[int],
    *,
    schedule: str = "squaredcos_cap_v2",
    lambda_min: float | None = None,
) -> list[int]:
    """Sorted original timesteps kept by a respacing spec.

    Accepts what the reference accepts: "N" or "a,b,c" (N steps, or per-section counts over
    equal sections, evenly strided with rounding), "ddimN" (the integer stride giving exactly
    N steps), "fast27" ("10,10,3,2,2" with T-1 replaced by T-3), an int, a list of counts, and
    "" (every step); and the solver grids "logsnrN", "karrasN", "quadN" of `schedule`, clipped at
    `lambda_min` (`solver_grid_timesteps`; the other respacings ignore both). Strings go through
    `parse_respacing`.
    """
    if isinstance(spacing, int):
        return sorted(_section_steps(num_steps, [spacing]))
    if not isinstance(spacing, str):
        return sorted(_section_steps(num_steps, [int(c) for c in spacing]))
    kind, counts = parse_respacing(spacing)
    if kind == "all":
        return list(range(num_steps))
    if kind in SOLVER_GRIDS:
        return solver_grid_timesteps(kind, counts[0], schedule, num_steps, lambda_min)
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
