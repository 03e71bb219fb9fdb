"""What a sweep samples: its settings, their shards of sample indices, and the cost of each.

A shard is one unit of work: the samples [start, stop) of one setting, written to one file.
A setting that samples exactly like another is measured on that one's shards (`sources`);
`[grid] steps_n` settings use only the first shards.
"""

from __future__ import annotations

from dataclasses import dataclass

from glide_eval.sweep.components import needs_upsampler
from glide_eval.sweep.config import Setting, SweepConfig
from samplers.sampling import model_evaluations as sampler_evaluations
from samplers.schedules import count_steps


@dataclass(frozen=True)
class Shard:
    """Samples [start, stop) of `setting` (a setting that is sampled, i.e. its own source)."""

    setting: Setting
    index: int
    start: int
    stop: int

    @property
    def ids(self) -> list[int]:
        return list(range(self.start, self.stop))

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def label(self) -> str:
        return f"{self.setting.name}/{self.index:05d}"


@dataclass
class Plan:
    settings: list[Setting]
    ranges: list[tuple[int, int]]  # [start, stop) sample indices of the shards of a setting with every caption
    sources: dict[str, Setting]  # setting name -> the setting whose shards hold its samples
    counts: dict[str, int]  # setting name -> its number of shards: the first ones

    @property
    def n_samples(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def shards_for(self, setting: Setting) -> list[Shard]:
        """The shards that hold `setting`'s samples (its source's first ones)."""
        source = self.sources[setting.name]
        return [
            Shard(source, k, start, stop) for k, (start, stop) in enumerate(self.ranges[: self.counts[setting.name]])
        ]

    @property
    def shards_to_sample(self) -> list[Shard]:
        """Every shard to sample: those of the settings that are their own source."""
        return [shard for s in self.settings if self.sources[s.name] is s for shard in self.shards_for(s)]

    def samples_of(self, setting: Setting) -> int:
        ranges = self.ranges[: self.counts[setting.name]]
        return ranges[-1][1] if ranges else 0


def make_plan(config: SweepConfig) -> Plan:
    n, size = config.captions.n, config.run.shard_size
    ranges = [(start, min(start + size, n)) for start in range(0, n, size)]
    settings = config.settings
    # [grid] steps_n is a multiple of shard_size: a steps setting samples the first shards
    counts = {s.name: -(-config.n_samples(s) // size) for s in settings}
    # a setting that samples exactly like another (e.g. steps-ancestral-25 at cfg 3 and cfg-3
    # with [sampler] ancestral, 25) is measured on that one's shards, not sampled again: on
    # those of the one with the most shards, the earliest of them on a tie
    first: dict[tuple, Setting] = {}
    for s in settings:
        best = first.get(s.sampling(config))
        if best is None or counts[s.name] > counts[best.name]:
            first[s.sampling(config)] = s
    sources = {s.name: first[s.sampling(config)] for s in settings}
    return Plan(settings, ranges, sources, counts)


def model_evaluations(config: SweepConfig, setting: Setting) -> dict:
    """Network evaluations per sample for one setting.

    Classifier-free guidance runs the base model on the conditional and the unconditional
    input at every step (2 evaluations); CLIP guidance adds one CLIP image-encoder forward
    and backward pass per step; the 256x256 upsampler runs unguided. A sampler's own count per
    step comes from `samplers.sampling.model_evaluations` (plms: one more than its steps).
    """
    _, method, respacing = setting.sampling(config)
    base_calls = sampler_evaluations(method, count_steps(respacing))
    kind = setting.guidance[0]
    return {
        "base": base_calls * (2 if kind == "cfg" else 1),
        "clip": base_calls if kind == "clip" else 0,
        "upsampler": count_steps(config.sampler.upsample_respacing) if needs_upsampler(config) else 0,
    }
