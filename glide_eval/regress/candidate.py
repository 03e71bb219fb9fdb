"""Sampling the candidate (or regenerating the baseline) into a run directory, resuming finished shards."""

from __future__ import annotations

from collections.abc import Callable

from glide_eval.sweep.components import Components
from glide_eval.sweep.config import Setting, SweepConfig
from glide_eval.sweep.plan import make_plan
from glide_eval.sweep.run import SamplingSetup, sample_shards
from glide_eval.sweep.rundir import RunDir, generation_hash, keyed_shards


def sample_run(
    config: SweepConfig,
    components: Components,
    captions: list[str],
    settings: list[Setting],
    save_images: str,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, dict]:
    """Sample `settings` for captions (config captions.n of them) into config.output_dir, resuming
    finished shards; returns {setting: {"features", "nan_count"}} like `baseline_features`. Holds the
    run directory's lock meanwhile (a sweep or another gate writing there stops this one: RunDirBusy)."""
    run_dir = RunDir(config.output_dir)
    gen_hash = generation_hash(config, components.provenance)
    with run_dir.lock("regress"):
        run_dir.remove_temp_files()
        run_dir.write_run_files(config, components.provenance, captions, gen_hash, log)
        plan = make_plan(config)
        sampled = list(dict.fromkeys(plan.sources[s.name] for s in settings))  # settings sharing samples once
        shards = keyed_shards([shard for s in sampled for shard in plan.shards_for(s)], gen_hash, captions)
        todo = run_dir.unfinished(shards, save_images)
        log(f"{run_dir.path}: {len(shards) - len(todo)} shards already finished, {len(todo)} to run")
        sample_shards(SamplingSetup(components, config, run_dir, save_images, progress), todo)
        return {s.name: run_dir.load_features(plan.shards_for(s)) for s in settings}
