"""Run (or resume) a sweep: sample every unfinished shard, then merge on rank 0.

The work is a list of shards (setting, range of sample indices). Each shard generates its
samples in batches, feeds every batch straight to the featurizer and writes one shard
file atomically (see `rundir`). Finished shards are verified and skipped, so a killed
sweep resumes where it stopped. Under torchrun the shards are dealt round-robin to the
ranks; rank 0 then merges the shards and computes the metrics of every setting. Rank 0
holds the run directory's lock from before the config check to the end, so no other
sweep (or regression gate) writes there meanwhile; the other ranks follow rank 0. Samples
are seeded by (seed, sample index), so the results do not depend on the number of
processes, the batch size or how often the sweep was interrupted.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from glide_eval.sweep.components import Components, apply_tf32, resolve_device
from glide_eval.sweep.config import SweepConfig
from glide_eval.sweep.distributed import Dist, init_distributed
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.lock import RunLock
from glide_eval.sweep.merge import merge
from glide_eval.sweep.plan import make_plan
from glide_eval.sweep.preflight import Ready, output_problems, preflight
from glide_eval.sweep.rundir import DamagedFile, KeyedShard, RunDir, generation_hash, keyed_shards
from storage.rundir import feature_arrays

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class SamplingSetup:
    """What sampling a shard needs besides the shard itself."""

    components: Components
    config: SweepConfig
    run_dir: RunDir
    save_images: str = "none"
    progress: bool = True
    prefix: str = ""  # "[rank R/W] " under torchrun


def normalize_generated(out, n: int) -> tuple[np.ndarray, int]:
    """(images uint8 [N,3,H,W], NaN count) from a generator's `images` or `(images, report)`.

    The report may be a count, per-sample counts, or a dict with "nan_count"/"nan_counts".
    """
    nan_count = 0
    if isinstance(out, tuple):
        out, report = out
        if isinstance(report, dict):
            report = report.get("nan_count", report.get("nan_counts", 0))
        nan_count = int(np.asarray(report if report is not None else 0, dtype=np.int64).sum())
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    images = np.asarray(out)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n or images.shape[1] != 3:
        raise SweepError(f"generator returned {images.dtype} {images.shape}, expected uint8 [{n},3,H,W]")
    return images, nan_count


def _features_of(batch_feats: dict, n: int) -> dict[str, np.ndarray]:
    out = {}
    for name, value in batch_feats.items():
        value = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        if value.shape[:1] != (n,):
            raise SweepError(f"featurizer output {name!r} has shape {value.shape}, expected [{n}, ...]")
        out[name] = value
    return out


def sample_shard(setup: SamplingSetup, shard: KeyedShard, progress: Callable[[int], None]) -> dict:
    """Sample one shard batch by batch, featurize every batch, write the shard; its record."""
    components, config = setup.components, setup.config
    batch, n_previews = config.run.batch_size, config.run.previews
    ids, captions = shard.ids, list(shard.captions)
    feats: dict[str, list] = {}
    nan_count, previews = 0, []
    t_gen = t_feat = 0.0
    t0 = time.perf_counter()
    for b in range(0, len(ids), batch):
        b_ids, b_caps = ids[b : b + batch], captions[b : b + batch]
        t = time.perf_counter()
        images, nan = normalize_generated(components.generate(b_caps, b_ids, shard.setting), len(b_ids))
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        batch_feats = components.featurize(images, b_caps)
        t_feat += time.perf_counter() - t
        for name, value in _features_of(batch_feats, len(b_ids)).items():
            feats.setdefault(name, []).append(value)
        nan_count += nan
        previews.extend(images[: max(0, n_previews - len(previews))])
        if setup.save_images != "none":
            setup.run_dir.save_images(shard, b_ids, images, setup.save_images)
        progress(len(b_ids))
    arrays = feature_arrays({k: np.concatenate(v) for k, v in feats.items()})
    arrays["sample_ids"] = np.asarray(ids, dtype=np.int64)
    arrays["nan_count"] = np.asarray(nan_count, dtype=np.int64)
    arrays["previews"] = np.stack(previews) if previews else np.zeros((0, 3, 1, 1), np.uint8)
    setting = shard.setting
    record = {
        "key": shard.key,
        "setting": setting.name,
        "family": setting.family,
        "scale": setting.scale,
        "shard": shard.index,
        "start": ids[0],
        "stop": ids[-1] + 1,
        "n": len(ids),
        "nan_count": nan_count,
        "save_images": setup.save_images,
        "timings": {"generate_s": t_gen, "featurize_s": t_feat, "wall_s": time.perf_counter() - t0},
        "host": socket.gethostname(),
        "rank": int(os.environ.get("RANK", 0)),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    return setup.run_dir.write_shard(shard, arrays, record)


def sample_shards(setup: SamplingSetup, todo: list[KeyedShard]) -> None:
    """Sample the shards in `todo`, with an overall and a per-setting progress bar."""
    prefix, show = setup.prefix, setup.progress
    overall = tqdm(
        total=sum(shard.n for shard in todo),
        desc=f"{prefix}sweep",
        unit="img",
        disable=not show or not todo,
        position=0,
        dynamic_ncols=True,
    )
    per_setting: dict[str, int] = {}
    for shard in todo:
        per_setting[shard.setting.name] = per_setting.get(shard.setting.name, 0) + shard.n
    bar, current = None, None
    try:
        for shard in todo:
            if shard.setting.name != current:
                if bar is not None:
                    bar.close()
                current = shard.setting.name
                bar = tqdm(
                    total=per_setting[current],
                    desc=f"{prefix}{current}",
                    unit="img",
                    disable=not show,
                    position=1,
                    leave=False,
                    dynamic_ncols=True,
                )

            def step(n, bar=bar):
                bar.update(n)
                overall.update(n)

            sample_shard(setup, shard, step)
    finally:
        if bar is not None:
            bar.close()
        overall.close()


def on_rank0(dist: Dist, action: Callable[[], None]) -> None:
    """Run `action` on rank 0 only; every rank raises its failure (the others as a SweepError
    saying rank 0 stopped), so no rank is left waiting at a barrier for a rank 0 that quit."""
    if dist.rank == 0:
        try:
            action()
        except BaseException as e:
            dist.share(f"rank 0 stopped: {e}")
            raise
    refusal = dist.share(None)
    if refusal is not None:
        raise SweepError(refusal)


def take_run_dir(run_dir: RunDir, config: SweepConfig, dist: Dist, force: bool, wait: bool, log: Log) -> RunLock | None:
    """Rank 0 locks the run directory, removes stale temporary files and checks the config
    before any rank goes on; every rank raises rank 0's refusal. Rank 0's lock (or None). An
    output folder that cannot be written is reported with every other problem of the
    pre-flight (`preflight.PreflightError`) instead of failing to take the lock."""
    taken = []

    def take() -> None:
        if output_problems(run_dir.path):
            preflight(config, resolve_device(config), reference=False)  # raises, listing every problem
        lock = run_dir.lock("sweep " + (str(config.source) if config.source else config.config_hash[:12]))
        lock.acquire(wait=wait, log=log)
        taken.append(lock)
        removed = run_dir.remove_temp_files()
        if removed:
            log(f"removed {len(removed)} temporary files of an interrupted run")
        run_dir.check_config(config, force, log)

    try:
        on_rank0(dist, take)
    except BaseException:
        for lock in taken:
            lock.release()
        raise
    return taken[0] if taken else None


def preflight_every_rank(config: SweepConfig, device: str, dist: Dist) -> Ready:
    """`preflight` on every rank (rank 0 also loads or builds the reference statistics). A rank
    whose pre-flight fails raises its PreflightError; the others then stop too, with a
    SweepError naming the rank, instead of waiting at the next barrier."""
    ready, failure = None, None
    try:
        ready = preflight(config, device, reference=dist.rank == 0)  # every file opened before sampling
    except BaseException as e:
        failure = e
    first = dist.first_failure(None if failure is None else f"rank {dist.rank} stopped: {failure}")
    if failure is not None:
        raise failure
    if first is not None:
        raise SweepError(first)
    return ready


def check_same_files(run_dir: RunDir, provenance: dict, force: bool) -> None:
    """Refuse (unless `force`) a run directory whose samples were drawn with other files: compared
    by content (sha256), so the same files under another folder resume the run. A damaged
    run.json (`check_config` said so; it is rewritten) tells nothing: shard keys still hold
    the files' sha256, so shards of other files are redone."""
    try:
        old = run_dir.read_run()
    except DamagedFile:
        return
    if old is None or force:
        return
    before, now = old.get("provenance", {}).get("files", {}), provenance.get("files", {})
    changed = [
        f"{k}: sha256 {before.get(k)} -> {now.get(k)}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if changed:
        raise SweepError(
            f"{run_dir.path} holds a sweep made with other files ({'; '.join(changed)}). "
            "Use another run.output_dir, or --force to reuse the shards that are still valid."
        )


def run_sweep(
    config: SweepConfig,
    *,
    force: bool = False,
    save_images: str | None = None,
    progress: bool = True,
    log: Log | None = None,
    wait: bool = False,
    after_merge: Callable[[dict], None] | None = None,
) -> dict:
    """Run (or resume) a sweep; returns a summary. Rank 0 also merges and writes the results,
    then calls `after_merge(summary)` (e.g. to build the report), all under the run directory's
    lock: a second sweep on the directory is refused (`RunDirBusy`) or, with `wait`, waits."""
    log = log or _stderr
    save_images = save_images or config.run.save_images
    run_dir = RunDir(config.output_dir)
    device = resolve_device(config)
    dist = init_distributed(device)
    lock = None
    try:
        lock = take_run_dir(run_dir, config, dist, force, wait, log)
        ready = preflight_every_rank(config, device, dist)
        components, captions = ready.components, ready.captions
        components.provenance["tf32"] = apply_tf32(config.run.tf32)  # run.json records it
        on_rank0(dist, lambda: check_same_files(run_dir, components.provenance, force))
        gen_hash = generation_hash(config, components.provenance)
        dist.barrier()  # every rank has its components before rank 0 replaces the run files
        if dist.rank == 0:
            run_dir.write_run_files(config, components.provenance, captions, gen_hash, log)
        mine = keyed_shards(make_plan(config).shards_to_sample[dist.rank :: dist.world], gen_hash, captions)
        todo = run_dir.unfinished(mine, save_images)
        skipped = len(mine) - len(todo)
        log(f"{dist.prefix}{len(mine)} shards: {skipped} already finished, {len(todo)} to run")
        sample_shards(SamplingSetup(components, config, run_dir, save_images, progress, dist.prefix), todo)
        dist.barrier()
        summary = {
            "run_dir": str(run_dir.path),
            "rank": dist.rank,
            "world_size": dist.world,
            "shards_run": len(todo),
            "shards_skipped": skipped,
        }
        if dist.rank == 0:
            summary["results"] = str(merge(config, components, captions, gen_hash, log=log, remeasure=force))
            if after_merge is not None:
                after_merge(summary)
        return summary
    finally:
        if lock is not None:
            lock.release()
        dist.close()
