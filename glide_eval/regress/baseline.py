"""The baseline of a regression test: a finished sweep run directory and its per-sample features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from glide_eval.sweep.config import ConfigError, Setting, SweepConfig
from glide_eval.sweep.plan import make_plan
from glide_eval.sweep.rundir import RunDir, keyed_shards
from storage import DamagedFile


class RegressError(RuntimeError):
    """The comparison cannot be made (exit 2); the message says what is missing or differs."""


@dataclass
class Baseline:
    run_dir: Path
    config: SweepConfig
    run: dict  # run.json
    captions: list[str]


def load_baseline(run_dir: Path) -> Baseline:
    """The baseline's config, run.json and captions, each checked (run.json against its own sha256,
    captions.json and config.toml against the sha256 run.json records); a RegressError naming the file."""
    rd = RunDir(run_dir)
    for path in (rd.config_toml, rd.run_json, rd.captions_json):
        if not path.is_file():
            raise RegressError(f"baseline {rd.path}: {path.name} not found (is it a sweep run directory?)")
    try:
        run = rd.read_run()
        captions = rd.read_captions()
        config = rd.load_config()
    except (ConfigError, DamagedFile) as e:
        raise RegressError(f"baseline {rd.path}: {e}") from None
    if "generation_hash" not in run:
        raise RegressError(f"baseline {rd.run_json} has no generation_hash")
    return Baseline(rd.path, config, run, captions)


def aligned_n(n: int, total: int, shard_size: int, batch_size: int) -> int:
    """The smallest sample count >= n that ends a generation batch (batches start at every shard
    start and every batch_size samples within a shard), at most `total`."""
    shard_start = (n - 1) // shard_size * shard_size
    batch_end = shard_start + math.ceil((n - shard_start) / batch_size) * batch_size
    return min(batch_end, shard_start + shard_size, total)


def baseline_features(baseline: Baseline, settings: list[Setting], n: int) -> dict[str, dict]:
    """{setting: {"features": {name: [n, ...]}, "nan_count": int}} from the baseline shards
    covering samples 0..n-1, or all of a setting's samples when it has fewer (`[grid] steps_n`);
    each shard verified against its record and sha256."""
    plan = make_plan(baseline.config)
    run_dir = RunDir(baseline.run_dir)
    out = {}
    for wanted in settings:
        shards = [s for s in plan.shards_for(wanted) if s.start < n]
        for shard in keyed_shards(shards, baseline.run["generation_hash"], baseline.captions):
            if run_dir.finished_record(shard) is None:
                npz = run_dir.shard_paths(shard.setting.name, shard.index)[0]
                raise RegressError(
                    f"baseline shard {npz} is missing, unfinished or corrupt "
                    "(no record with the expected key and sha256)"
                )
        out[wanted.name] = run_dir.load_features(shards, n)
    return out


def n_rows(side: dict) -> int:
    """Samples in one side's {"features": {name: [n, ...]}}."""
    return len(next(iter(side["features"].values())))
