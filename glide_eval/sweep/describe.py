"""`sweep --dry-run`: the plan of a sweep (settings, shards, model evaluations, time left)."""

from __future__ import annotations

from pathlib import Path

from glide_eval.sweep.config import SweepConfig, steps_reference
from glide_eval.sweep.plan import Plan, make_plan, model_evaluations
from glide_eval.sweep.rundir import RunDir


def describe_plan(config: SweepConfig, run_dir: Path | None = None) -> dict:
    plan = make_plan(config)
    settings = []
    totals = {"base": 0, "clip": 0, "upsampler": 0}
    reference = steps_reference(config)
    ref_setting = next((s for s in plan.settings if s.name == reference), None)
    ref_base = model_evaluations(config, ref_setting)["base"] if ref_setting is not None else 0
    for s in plan.settings:
        source, n = plan.sources[s.name], plan.samples_of(s)
        per = model_evaluations(config, s) if source is s else dict.fromkeys(totals, 0)
        for k in totals:
            totals[k] += per[k] * n
        settings.append(
            {
                "setting": s.name,
                "family": s.family,
                "scale": s.scale,
                "samples": n,
                "shards": plan.counts[s.name],
                "samples_from": source.name,
                "model_evaluations": {k: v * n for k, v in per.items()},
                # base-model evaluations per sample relative to the steps reference's (steps settings)
                "vs_steps_reference": model_evaluations(config, s)["base"] / ref_base
                if ref_base and s.family == "steps"
                else None,
            }
        )
    done, remaining_s = None, None
    if run_dir is not None and RunDir(run_dir).has_shards():
        done, remaining_s = progress_estimate(plan, RunDir(run_dir))
    return {
        "config_hash": config.config_hash,
        "output_dir": str(config.output_dir),
        "resolution": config.sampler.resolution,
        "engine": config.models.engine,
        "samples_per_setting": plan.n_samples,
        "shard_size": config.run.shard_size,
        "shards_per_setting": len(plan.ranges),
        "shards_to_sample": len(plan.shards_to_sample),
        "shards_with_records": done,
        "estimated_remaining_s": remaining_s,
        "settings": settings,
        "model_evaluations": totals,
        "metrics": config.metrics.names,
        "steps_reference": reference,
    }


def progress_estimate(plan: Plan, run_dir: RunDir) -> tuple[int, float | None]:
    """(shards with a record, seconds of work left at the measured seconds per sample)."""
    done, seconds, samples, left = 0, 0.0, 0, 0
    for shard in plan.shards_to_sample:
        try:
            record = run_dir.read_record(shard)
            done += 1
            seconds += record["timings"]["wall_s"]
            samples += record["n"]
        except (OSError, ValueError, KeyError):
            left += shard.n
    return done, (seconds / samples * left if samples else None)


def format_plan(plan: dict) -> str:
    lines = [
        f"config {plan['config_hash'][:12]}  engine {plan['engine']}  {plan['resolution']}x"
        f"{plan['resolution']}  -> {plan['output_dir']}",
        f"{len(plan['settings'])} settings x {plan['samples_per_setting']} samples"
        + (
            " (steps settings: fewer)"
            if any(s["samples"] != plan["samples_per_setting"] for s in plan["settings"])
            else ""
        )
        + f" = {plan['shards_to_sample']} shards of <= {plan['shard_size']}"
        + (f" ({plan['shards_with_records']} with records)" if plan["shards_with_records"] is not None else ""),
    ]
    for s in plan["settings"]:
        ev = s["model_evaluations"]
        lines.append(
            f"  {s['setting']:<18} {s['samples']:>7} samples {s['shards']:>5} shards  base {ev['base']:>12,}  "
            f"clip {ev['clip']:>12,}  upsampler {ev['upsampler']:>12,}"
            + (
                f"  {s['vs_steps_reference']:.3f}x {plan['steps_reference']} per sample"
                if s.get("vs_steps_reference") is not None
                else ""
            )
        )
    if plan["estimated_remaining_s"] is not None:
        seconds = plan["estimated_remaining_s"]
        text = (
            f"{seconds / 3600:.1f} h"
            if seconds >= 3600
            else f"{seconds / 60:.1f} min"
            if seconds >= 60
            else f"{seconds:.0f} s"
        )
        lines.append(f"estimated time left (one process, at the measured rate): {text}")
    ev = plan["model_evaluations"]
    lines.append(f"model evaluations: base {ev['base']:,}  clip {ev['clip']:,}  upsampler {ev['upsampler']:,}")
    lines.append(f"metrics: {', '.join(plan['metrics'])}")
    return "\n".join(lines)
