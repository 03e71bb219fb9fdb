"""`glide-eval sweep CONFIG`: sample a grid of guidance settings and measure each one.

The work is a list of units (setting, shard of sample indices). Each unit generates its
samples in batches, feeds every batch straight to the featurizer and writes one shard
file atomically (see `sweep_store`). Finished shards are verified and skipped, so a
killed sweep resumes where it stopped. Under torchrun the units are dealt round-robin to
the ranks; rank 0 then merges the shards and computes the metrics of every setting.
Samples are seeded by (seed, sample index), so the results do not depend on the number
of processes, the batch size or how often the sweep was interrupted.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from glide_eval import sweep_store as store
from glide_eval.cli import echo_json
from glide_eval.config import ConfigError, Setting, SweepConfig, count_steps, load_config, sha256_json
from glide_eval.sweep_components import (
    Components, MissingComponentError, build_components, load_captions, needs_upsampler,
    package_versions, resolve_device,
)

# keys that change the captions or the metrics but not a shard made from given captions
# (and the batch size: a --force run may finish a sweep with another batch size)
_NOT_IN_SHARD_KEY = {("grid", None), ("captions", "n"), ("metrics", "reference"), ("metrics", "reference_n"),
                     ("metrics", "ci"), ("metrics", "bootstrap"), ("run", "batch_size")}


class SweepError(RuntimeError):
    """The sweep cannot go on; the message says why and what to do."""


# ---------------------------------------------------------------- plan

@dataclass
class Plan:
    settings: list[Setting]
    shards: list[tuple[int, int]]  # [start, stop) sample indices of the settings with every caption
    units: list[tuple[Setting, int]]
    sources: dict[str, Setting]    # setting name -> the setting whose shards hold its samples
    counts: dict[str, int]         # setting name -> its number of shards: the first ones

    @property
    def n_samples(self) -> int:
        return self.shards[-1][1] if self.shards else 0

    def shards_of(self, setting: Setting) -> list[tuple[int, int]]:
        return self.shards[: self.counts[setting.name]]

    def samples_of(self, setting: Setting) -> int:
        shards = self.shards_of(setting)
        return shards[-1][1] if shards else 0


def make_plan(config: SweepConfig) -> Plan:
    n, size = config["captions"]["n"], config["run"]["shard_size"]
    shards = [(start, min(start + size, n)) for start in range(0, n, size)]
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
    units = [(s, k) for s in settings if sources[s.name] is s for k in range(counts[s.name])]
    return Plan(settings, shards, units, sources, counts)


def model_evaluations(config: SweepConfig, setting: Setting) -> dict:
    """Network evaluations per sample for one setting.

    Classifier-free guidance runs the base model on the conditional and the unconditional
    input at every step (2 evaluations); CLIP guidance adds one CLIP image-encoder forward
    and backward pass per step; the 256x256 upsampler runs unguided.
    """
    base_steps = count_steps(setting.sampler(config)[1])
    kind = setting.guidance[0]
    return {
        "base": base_steps * (2 if kind == "cfg" else 1),
        "clip": base_steps if kind == "clip" else 0,
        "upsampler": count_steps(config["sampler"]["upsample_respacing"])
        if needs_upsampler(config) else 0,
    }


def describe_plan(config: SweepConfig, run_dir: Path | None = None) -> dict:
    plan = make_plan(config)
    settings = []
    totals = {"base": 0, "clip": 0, "upsampler": 0}
    for s in plan.settings:
        source, n = plan.sources[s.name], plan.samples_of(s)
        per = model_evaluations(config, s) if source is s else {k: 0 for k in totals}
        for k in totals:
            totals[k] += per[k] * n
        settings.append({"setting": s.name, "family": s.family, "scale": s.scale,
                         "samples": n, "shards": plan.counts[s.name], "samples_from": source.name,
                         "model_evaluations": {k: v * n for k, v in per.items()}})
    done, remaining_s = None, None
    if run_dir is not None and (run_dir / "shards").is_dir():
        done, remaining_s = progress_estimate(plan, run_dir)
    return {
        "config_hash": config.config_hash,
        "output_dir": str(config.output_dir),
        "resolution": config["sampler"]["resolution"],
        "engine": config["models"]["engine"],
        "samples_per_setting": plan.n_samples,
        "shard_size": config["run"]["shard_size"],
        "shards_per_setting": len(plan.shards),
        "units": len(plan.units),
        "units_with_records": done,
        "estimated_remaining_s": remaining_s,
        "settings": settings,
        "model_evaluations": totals,
        "metrics": config["metrics"]["names"],
    }


def progress_estimate(plan: Plan, run_dir: Path) -> tuple[int, float | None]:
    """(shards with a record, seconds of work left at the measured seconds per sample)."""
    done, seconds, samples, left = 0, 0.0, 0, 0
    for setting, k in plan.units:
        record_path = store.shard_paths(run_dir, setting.name, k)[1]
        start, stop = plan.shards[k]
        try:
            record = store.read_json(record_path)
            done += 1
            seconds += record["timings"]["wall_s"]
            samples += record["n"]
        except (OSError, ValueError, KeyError):
            left += stop - start
    return done, (seconds / samples * left if samples else None)


# ---------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    initialized: bool = False

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str) -> Dist:
    """Read RANK / WORLD_SIZE (set by torchrun); join the process group when WORLD_SIZE > 1."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        torch.cuda.set_device(device)  # one GPU per rank, also for NCCL's barrier
    if not dist.is_initialized():
        # long timeout: ranks wait at the final barrier while others finish their shards
        dist.init_process_group(backend, timeout=datetime.timedelta(days=2))
    return Dist(rank, world, True)


# ---------------------------------------------------------------- run

def shard_key(gen_hash: str, setting: Setting, sample_ids: list[int], captions: list[str]) -> str:
    key = [setting.family, setting.scale]
    if setting.method is not None:  # the sampler overrides; other settings keep their old keys
        key += [setting.method, setting.respacing, setting.guided_by]
    return sha256_json({"generation": gen_hash, "setting": key,
                        "sample_ids": [sample_ids[0], sample_ids[-1] + 1], "captions": captions})


def generation_hash(config: SweepConfig, provenance: dict) -> str:
    """Hash of everything that changes one sample's pixels or features."""
    d = config.hashed_data()
    for section, key in _NOT_IN_SHARD_KEY:
        if key is None:
            d.pop(section, None)
        else:
            d[section].pop(key, None)
    return sha256_json({"config": d, "files": provenance.get("files", {})})


def check_config_unchanged(run_dir: Path, config: SweepConfig, force: bool) -> None:
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        return
    old = store.read_json(run_json)
    if old.get("config_hash") == config.config_hash or force:
        return
    changed = []
    old_data = old.get("config", {})
    new_data = config.hashed_data()
    for section in sorted(set(old_data) | set(new_data)):
        a, b = old_data.get(section, {}), new_data.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    raise SweepError(
        f"{run_dir} holds a sweep made with another config ({'; '.join(changed) or 'hash differs'}). "
        "Use another run.output_dir, or --force to reuse the shards that are still valid.")


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


def run_unit(components: Components, config: SweepConfig, run_dir: Path, setting: Setting,
             index: int, ids: list[int], captions: list[str], key: str, save_images: str,
             progress) -> dict:
    batch = config["run"]["batch_size"]
    n_previews = config["run"]["previews"]
    feats: dict[str, list] = {}
    nan_count, previews = 0, []
    t_gen = t_feat = 0.0
    t0 = time.perf_counter()
    for b in range(0, len(ids), batch):
        b_ids, b_caps = ids[b:b + batch], captions[b:b + batch]
        t = time.perf_counter()
        images, nan = normalize_generated(components.generate(b_caps, b_ids, setting), len(b_ids))
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        batch_feats = components.featurize(images, b_caps)
        t_feat += time.perf_counter() - t
        for name, value in batch_feats.items():
            value = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
            if value.shape[:1] != (len(b_ids),):
                raise SweepError(f"featurizer output {name!r} has shape {value.shape}, "
                                 f"expected [{len(b_ids)}, ...]")
            feats.setdefault(name, []).append(value)
        nan_count += nan
        previews.extend(images[: max(0, n_previews - len(previews))])
        if save_images != "none":
            store.save_images(run_dir, setting.name, index, b_ids, images, save_images)
        progress(len(b_ids))
    arrays = {store.FEATURE_PREFIX + k: np.concatenate(v) for k, v in feats.items()}
    arrays["sample_ids"] = np.asarray(ids, dtype=np.int64)
    arrays["nan_count"] = np.asarray(nan_count, dtype=np.int64)
    arrays["previews"] = np.stack(previews) if previews else np.zeros((0, 3, 1, 1), np.uint8)
    record = {
        "key": key, "setting": setting.name, "family": setting.family, "scale": setting.scale,
        "shard": index, "start": ids[0], "stop": ids[-1] + 1, "n": len(ids),
        "nan_count": nan_count, "save_images": save_images,
        "timings": {"generate_s": t_gen, "featurize_s": t_feat, "wall_s": time.perf_counter() - t0},
        "host": socket.gethostname(), "rank": int(os.environ.get("RANK", 0)),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    return store.write_shard(run_dir, setting.name, index, arrays, record)


def run_sweep(config: SweepConfig, *, force: bool = False, save_images: str | None = None,
              progress: bool = True, log=None) -> dict:
    """Run (or resume) a sweep; returns a summary. Rank 0 also merges and writes the results."""
    log = log or (lambda msg: click.echo(msg, err=True))
    save_images = save_images or config["run"]["save_images"]
    run_dir = config.output_dir
    device = resolve_device(config)
    dist = init_distributed(device)
    try:
        check_config_unchanged(run_dir, config, force)
        components = build_components(config, device)
        captions = load_captions(config)
        if len(captions) != config["captions"]["n"]:
            raise SweepError(f"caption source gave {len(captions)} captions, [captions.n] = "
                             f"{config['captions']['n']}")
        gen_hash = generation_hash(config, components.provenance)
        dist.barrier()  # every rank has checked the old run.json before rank 0 replaces it
        if dist.rank == 0:
            write_run_files(run_dir, config, components.provenance, captions, gen_hash)
        plan = make_plan(config)
        mine = plan.units[dist.rank::dist.world]
        todo, skipped = [], 0
        for setting, k in mine:
            start, stop = plan.shards[k]
            ids = list(range(start, stop))
            key = shard_key(gen_hash, setting, ids, captions[start:stop])
            if store.finished_record(run_dir, setting.name, k, key, save_images):
                skipped += 1
            else:
                todo.append((setting, k, ids, key))
        prefix = f"[rank {dist.rank}/{dist.world}] " if dist.world > 1 else ""
        log(f"{prefix}{len(mine)} shards: {skipped} already finished, {len(todo)} to run")
        run_units(components, config, run_dir, todo, captions, save_images, progress, prefix)
        dist.barrier()
        summary = {"run_dir": str(run_dir), "rank": dist.rank, "world_size": dist.world,
                   "shards_run": len(todo), "shards_skipped": skipped}
        if dist.rank == 0:
            summary["results"] = str(merge(config, components, captions, gen_hash, log=log,
                                           remeasure=force))
        return summary
    finally:
        dist.close()


def write_run_files(run_dir: Path, config: SweepConfig, provenance: dict, captions: list[str],
                    gen_hash: str) -> None:
    store.atomic_write_text(run_dir / "config.toml", config.to_toml())
    store.write_json(run_dir / "captions.json", captions)
    store.write_json(run_dir / "run.json", {
        "config_hash": config.config_hash, "generation_hash": gen_hash,
        "config": config.hashed_data(), "source": str(config.source) if config.source else None,
        "captions_sha256": sha256_json(captions), "provenance": provenance,
        "versions": package_versions(),
    })


def run_units(components, config, run_dir, todo, captions, save_images, progress, prefix) -> None:
    from tqdm import tqdm

    total = sum(len(ids) for _, _, ids, _ in todo)
    overall = tqdm(total=total, desc=f"{prefix}sweep", unit="img", disable=not progress or not todo,
                   position=0, dynamic_ncols=True)
    per_setting: dict[str, int] = {}
    for setting, _, ids, _ in todo:
        per_setting[setting.name] = per_setting.get(setting.name, 0) + len(ids)
    bar, current = None, None
    try:
        for setting, k, ids, key in todo:
            if setting.name != current:
                if bar is not None:
                    bar.close()
                current = setting.name
                bar = tqdm(total=per_setting[current], desc=f"{prefix}{current}", unit="img",
                           disable=not progress, position=1, leave=False, dynamic_ncols=True)

            def step(n, bar=bar):
                bar.update(n)
                overall.update(n)

            start, stop = ids[0], ids[-1] + 1
            run_unit(components, config, run_dir, setting, k, ids, captions[start:stop], key,
                     save_images, step)
    finally:
        if bar is not None:
            bar.close()
        overall.close()


# ---------------------------------------------------------------- merge

def merge(config: SweepConfig, components: Components, captions: list[str], gen_hash: str,
          log=print, remeasure: bool = False) -> Path:
    """Check every shard, compute each setting's metrics, write manifest, previews, results.

    Skipped when results.parquet exists and manifest.json already lists exactly these shards
    (unless `remeasure`).
    """
    import pandas as pd

    run_dir = config.output_dir
    plan = make_plan(config)
    records: dict[str, list[dict]] = {}
    missing = []
    for setting in plan.settings:
        if plan.sources[setting.name] is not setting:
            continue
        records[setting.name] = []
        for k, (start, stop) in enumerate(plan.shards_of(setting)):
            key = shard_key(gen_hash, setting, list(range(start, stop)), captions[start:stop])
            record = store.finished_record(run_dir, setting.name, k, key)
            if record is None:
                missing.append(f"{setting.name}/{k:05d}")
            records[setting.name].append(record)
    if missing:
        raise SweepError(f"{len(missing)} shards are not finished ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}); rerun the sweep to finish them")
    manifest = [{"setting": r["setting"], "shard": r["shard"], "file": r["file"], "sha256": r["sha256"],
                 "start": r["start"], "stop": r["stop"]} for rs in records.values() for r in rs]
    manifest = {"config_hash": config.config_hash, "generation_hash": gen_hash, "shards": manifest}
    results = run_dir / "results.parquet"
    if (not remeasure and results.is_file() and (run_dir / "manifest.json").is_file()
            and store.read_json(run_dir / "manifest.json") == manifest):
        log(f"results are up to date: {results}")
        return results
    rows, previews = [], {}
    for setting in plan.settings:
        source, n, count = plan.sources[setting.name], plan.samples_of(setting), plan.counts[setting.name]
        shards = [store.load_shard(run_dir, source.name, k) for k in range(count)]
        ids = np.concatenate([s["sample_ids"] for s in shards])
        if not np.array_equal(ids, np.arange(n)):
            raise SweepError(f"{setting.name}: shards do not hold sample indices 0..{n - 1} exactly once")
        names = [k for k in shards[0] if k.startswith(store.FEATURE_PREFIX)]
        features = {k[len(store.FEATURE_PREFIX):]: np.concatenate([s[k] for s in shards]) for k in names}
        t = time.perf_counter()
        try:
            metrics = components.compute_metrics(features, captions[:n], config["metrics"]["ci"])
        except MissingComponentError:
            raise
        except (ValueError, RuntimeError) as e:
            raise SweepError(f"{setting.name}: computing the metrics failed: {e}") from e
        metric_s = time.perf_counter() - t
        nan_count = int(sum(int(s["nan_count"]) for s in shards))
        timings = [r["timings"] for r in records[source.name][:count]]
        rows.append(result_row(config, setting, metrics, n, nan_count, timings,
                               metric_s, gen_hash, components.provenance, samples_from=source.name))
        previews[setting.name] = shards[0]["previews"]
        log(f"{setting.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    n_prev = min((len(p) for p in previews.values()), default=0)
    store.save_npz(run_dir / "previews.npz", {
        **{f"setting__{k}": v[:n_prev] for k, v in previews.items()},
        "captions": np.asarray(captions[:n_prev]), "sample_ids": np.arange(n_prev)})
    df = pd.DataFrame(rows)
    store.atomic_write_with(run_dir / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
    store.atomic_write_with(results, lambda tmp: df.to_parquet(tmp, index=False))
    store.write_json(run_dir / "manifest.json", manifest)  # last: marks the results up to date
    return results


def result_row(config, setting, metrics, n, nan_count, timings, metric_s, gen_hash, provenance, samples_from=None):
    """One results row; `samples_from` names the setting whose samples (and timings) it shares."""
    row = {"setting": setting.name, "family": setting.family, "scale": setting.scale,
           "samples_from": samples_from or setting.name}
    method, respacing = setting.sampler(config)
    row.update({k: float(v) for k, v in metrics.items()})
    row.update({
        "n_samples": n, "nan_count": nan_count,
        "generate_s": sum(t["generate_s"] for t in timings),
        "featurize_s": sum(t["featurize_s"] for t in timings),
        "metrics_s": metric_s,
        "wall_time_s": sum(t["wall_s"] for t in timings) + metric_s,
        "resolution": config["sampler"]["resolution"], "method": method,
        "base_respacing": respacing,
        "upsample_respacing": config["sampler"]["upsample_respacing"]
        if needs_upsampler(config) else "",
        "seed": config["run"]["seed"], "captions_source": config["captions"]["source"],
        "captions_seed": config["captions"]["seed"], "engine": config["models"]["engine"],
        "config_hash": config.config_hash, "generation_hash": gen_hash,
    })
    for label, digest in sorted(provenance.get("files", {}).items()):
        row[f"sha256_{label}"] = digest
    versions = dict(package_versions(), **provenance.get("versions", {}))
    row["versions"] = json.dumps(versions, sort_keys=True)
    return row


# ---------------------------------------------------------------- CLI

@click.command("sweep")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--output-dir", type=click.Path(file_okay=False), help="Override [run.output_dir].")
@click.option("--dry-run", is_flag=True, help="Print the plan (settings, shards, model evaluations) and stop.")
@click.option("--force", is_flag=True,
              help="Run even if RUN_DIR was made with another config: shards still valid under the new "
                   "config are kept, the others redone, and the metrics recomputed.")
@click.option("--save-images", type=click.Choice(["none", "png", "npz"]), default=None,
              help="Also keep every generated image (default: [run.save_images]).")
@click.option("--report", "make_report", is_flag=True,
              help="Then build the reports (Figure 6, Table 2, HTML) in RUN_DIR/report.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sweep_command(config_path, output_dir, dry_run, force, save_images, make_report, no_progress, as_json):
    """Sample every guidance setting of CONFIG, measure it, and write results.parquet.

    Rerunning resumes: finished shards are verified and skipped. Under
    `torchrun --nproc-per-node N -m glide_eval sweep CONFIG` shards are spread over ranks.
    """
    try:
        overrides = {"run": {"output_dir": str(Path(output_dir).resolve())}} if output_dir else None
        config = load_config(config_path, overrides)
        if dry_run:
            plan = describe_plan(config, config.output_dir)
            echo_json(plan) if as_json else click.echo(format_plan(plan))
            return
        summary = run_sweep(config, force=force, save_images=save_images, progress=not no_progress)
        if make_report and "results" in summary:
            from reports.build import build_report

            summary["report"] = str(build_report(config.output_dir)["html"])
    except (ConfigError, SweepError, MissingComponentError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        echo_json(summary)
    else:
        for key in ("results", "report"):
            if key in summary:
                click.echo(f"{key}: {summary[key]}")


def format_plan(plan: dict) -> str:
    lines = [
        f"config {plan['config_hash'][:12]}  engine {plan['engine']}  {plan['resolution']}x"
        f"{plan['resolution']}  -> {plan['output_dir']}",
        f"{len(plan['settings'])} settings x {plan['samples_per_setting']} samples"
        + (" (steps settings: fewer)" if any(s["samples"] != plan["samples_per_setting"] for s in plan["settings"])
           else "")
        + f" = {plan['units']} shards of <= {plan['shard_size']}"
        + (f" ({plan['units_with_records']} with records)" if plan["units_with_records"] is not None else ""),
    ]
    for s in plan["settings"]:
        ev = s["model_evaluations"]
        lines.append(f"  {s['setting']:<18} {s['samples']:>7} samples {s['shards']:>5} shards  base {ev['base']:>12,}  "
                     f"clip {ev['clip']:>12,}  upsampler {ev['upsampler']:>12,}")
    if plan["estimated_remaining_s"] is not None:
        seconds = plan["estimated_remaining_s"]
        text = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" \
            if seconds >= 60 else f"{seconds:.0f} s"
        lines.append(f"estimated time left (one process, at the measured rate): {text}")
    ev = plan["model_evaluations"]
    lines.append(f"model evaluations: base {ev['base']:,}  clip {ev['clip']:,}  upsampler {ev['upsampler']:,}")
    lines.append(f"metrics: {', '.join(plan['metrics'])}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_command())
