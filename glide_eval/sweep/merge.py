"""Merge a sweep's shards: check every one, compute each setting's metrics, write the results."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from glide_eval.sweep.components import Components, needs_upsampler
from glide_eval.sweep.config import Setting, SweepConfig
from glide_eval.sweep.differences import measure_differences
from glide_eval.sweep.errors import MissingComponentError, SweepError
from glide_eval.sweep.plan import Plan, make_plan
from glide_eval.sweep.rundir import RunDir, keyed_shards
from storage import package_versions
from storage.rundir import shard_features


def finished_records(run_dir: RunDir, plan: Plan, gen_hash: str, captions: list[str]) -> dict[str, list[dict]]:
    """{sampled setting: its shards' records}; SweepError naming the shards that are not finished."""
    records: dict[str, list[dict]] = {}
    missing = []
    for setting in plan.settings:
        if plan.sources[setting.name] is not setting:
            continue
        records[setting.name] = []
        for shard in keyed_shards(plan.shards_for(setting), gen_hash, captions):
            record = run_dir.finished_record(shard)
            if record is None:
                missing.append(shard.label)
            records[setting.name].append(record)
    if missing:
        raise SweepError(
            f"{len(missing)} shards are not finished ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); rerun the sweep to finish them"
        )
    return records


def merge(
    config: SweepConfig,
    components: Components,
    captions: list[str],
    gen_hash: str,
    log: Callable[[str], None] = print,
    remeasure: bool = False,
):
    """Check every shard, compute each setting's metrics, write manifest, previews, results.

    Skipped when manifest.json lists exactly these shards and every result file has the
    sha256 it records (unless `remeasure`); anything missing or damaged is rebuilt.
    """
    run_dir = RunDir(config.output_dir)
    plan = make_plan(config)
    records = finished_records(run_dir, plan, gen_hash, captions)
    manifest = [
        {
            "setting": r["setting"],
            "shard": r["shard"],
            "file": r["file"],
            "sha256": r["sha256"],
            "start": r["start"],
            "stop": r["stop"],
        }
        for rs in records.values()
        for r in rs
    ]
    manifest = {"config_hash": config.config_hash, "generation_hash": gen_hash, "shards": manifest}
    stale = "remeasuring (--force)" if remeasure else run_dir.stale_results(manifest)
    if stale is None:
        log(f"results are up to date (every file checked): {run_dir.results_parquet}")
        return run_dir.results_parquet
    log(f"merging the shards: {stale}")
    rows, previews, features = [], {}, {}
    for setting in plan.settings:
        metrics, row, previews[setting.name], features[setting.name] = measure_setting(
            config, components, run_dir, plan, setting, captions, records, gen_hash
        )
        rows.append(row)
        log(f"{setting.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    differences = measure_differences(config, components, rows, features, log)
    return run_dir.write_results(rows, previews, captions, manifest, differences)


def measure_setting(
    config: SweepConfig,
    components: Components,
    run_dir: RunDir,
    plan: Plan,
    setting: Setting,
    captions: list[str],
    records: dict[str, list[dict]],
    gen_hash: str,
) -> tuple[dict, dict, np.ndarray, dict]:
    """(metrics, results row, preview images, features) of one setting, from the shards that hold its samples."""
    source, n, count = plan.sources[setting.name], plan.samples_of(setting), plan.counts[setting.name]
    shards = [run_dir.load_shard(shard.setting.name, shard.index) for shard in plan.shards_for(setting)]
    ids = np.concatenate([s["sample_ids"] for s in shards])
    if not np.array_equal(ids, np.arange(n)):
        raise SweepError(f"{setting.name}: shards do not hold sample indices 0..{n - 1} exactly once")
    parts = [shard_features(s) for s in shards]
    features = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t = time.perf_counter()
    try:
        metrics = components.compute_metrics(features, captions[:n], config.metrics.ci)
    except MissingComponentError:
        raise
    except (ValueError, RuntimeError) as e:
        raise SweepError(f"{setting.name}: computing the metrics failed: {e}") from e
    metric_s = time.perf_counter() - t
    nan_count = int(sum(int(s["nan_count"]) for s in shards))
    timings = [r["timings"] for r in records[source.name][:count]]
    row = result_row(
        config,
        setting,
        metrics,
        n,
        nan_count,
        timings,
        metric_s,
        gen_hash,
        components.provenance,
        samples_from=source.name,
    )
    return metrics, row, shards[0]["previews"], features


def result_row(
    config: SweepConfig,
    setting: Setting,
    metrics: dict,
    n: int,
    nan_count: int,
    timings: list[dict],
    metric_s: float,
    gen_hash: str,
    provenance: dict,
    samples_from: str | None = None,
) -> dict:
    """One results row; `samples_from` names the setting whose samples (and timings) it shares."""
    row = {
        "setting": setting.name,
        "family": setting.family,
        "scale": setting.scale,
        "samples_from": samples_from or setting.name,
    }
    _, method, respacing = setting.sampling(config)
    row.update({k: float(v) for k, v in metrics.items()})
    row.update(
        {
            "n_samples": n,
            "nan_count": nan_count,
            "generate_s": sum(t["generate_s"] for t in timings),
            "featurize_s": sum(t["featurize_s"] for t in timings),
            "metrics_s": metric_s,
            "wall_time_s": sum(t["wall_s"] for t in timings) + metric_s,
            "resolution": config.sampler.resolution,
            "method": method,
            "base_respacing": respacing,
            "upsample_respacing": config.sampler.upsample_respacing if needs_upsampler(config) else "",
            "upsample_temperature": config.sampler.upsample_temperature if needs_upsampler(config) else None,
            "dtype": config.run.dtype,
            "seed": config.run.seed,
            "captions_source": config.captions.source,
            "captions_seed": config.captions.seed,
            "engine": config.models.engine,
            "config_hash": config.config_hash,
            "generation_hash": gen_hash,
        }
    )
    for label, digest in sorted(provenance.get("files", {}).items()):
        row[f"sha256_{label}"] = digest
    versions = dict(package_versions(), **provenance.get("versions", {}))
    row["versions"] = json.dumps(versions, sort_keys=True)
    return row
