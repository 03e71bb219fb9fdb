"""`glide-eval regress`: a CI gate that compares a candidate checkpoint with a baseline sweep.

The candidate is sampled under the baseline run's exact protocol: the baseline's captions
(captions.json), the same per-sample seeds (run.seed, sample index), sampler, steps,
guidance settings, dtype and engine, for the first N sample ids (N rounded up to the end
of a generation batch, so every sample is made in the same batch as in the baseline and
an identical checkpoint gives bit-identical results). The baseline's per-sample features
for those ids are read from its shards; nothing of the baseline is recomputed.

Comparison, per (setting, metric). Both sides' metrics come from the same metric code
(the engine's `compute_metrics`, reference statistics fixed). The difference is
``d = candidate - baseline``; its worsening is ``w = d`` for FID (lower is better) and
``w = -d`` for IS, precision, recall and CLIP score (higher is better). The interval is
``w ± z·SE``, SE the standard deviation of a paired bootstrap (each replicate resamples
the same sample indices on both sides, `metrics.paired_bootstrap`), z the two-sided normal
quantile at `level` (default 0.95) Bonferroni-corrected over all m compared
(setting, metric) pairs, i.e. at 1 - 0.05/m each. With tolerance t >= 0 (absolute, or a
percentage of the baseline value; default 0):

- **regression**: ``w - z·SE > t``; the whole interval says the candidate is worse by more
  than the tolerance;
- **possible regression**: ``w > t`` but the interval reaches into ``<= t`` (sampling noise
  cannot be ruled out; the gate passes);
- **better**: ``w + z·SE < 0``; **identical**: ``d == 0`` and SE == 0; **ok** otherwise.

Sampling NaN/inf steps are compared too: a regression when the candidate has more than the
baseline had over the baseline shards that cover the N samples (plus the nan_count tolerance).

Protocol (exit 2 when it differs, listing every difference): run.seed, run.dtype, engine,
engine_options, sampler.*, captions (the candidate config's captions must equal the
baseline's first N), guidance settings (a subset of the baseline's). The batch size and
device may differ (then the numerics may move in the last bits). The evaluation files in
the provenance (feature extractors) must have the baseline's sha256, and the candidate run
must load at least one file of the candidate folder: an engine that ignores
[models.checkpoints] would otherwise compare the baseline with itself and pass.

Exit status: 0 no regression, 1 at least one regression, 2 could not evaluate (missing
files or shards, protocol mismatch, N beyond the baseline); the message names what differs.

Output folder (--out): candidate/ is a run directory in the sweep's layout (sweep_store)
and resumes like a sweep; baseline-images/ holds regenerated baseline images (--images,
when the baseline did not save them); regress.json and regress.md are the report.
"""
from __future__ import annotations

import datetime
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from glide_eval import sweep_store as store
from glide_eval.cli import echo_json
from glide_eval.config import ConfigError, Setting, SweepConfig, load_config, sha256_json
from glide_eval.sweep import SweepError, generation_hash, make_plan, run_units, shard_key, write_run_files
from glide_eval.sweep_components import (
    Components, MissingComponentError, build_components, cached_sha256, load_captions, package_versions,
    resolve_device,
)
from metrics.paired_bootstrap import normal_interval, normal_z, paired_bootstrap

HIGHER_IS_BETTER = {"fid": False, "is": True, "precision": True, "recall": True, "clip_score": True}
# config keys that define the protocol and must equal the baseline's (captions are compared by content)
PROTOCOL_KEYS = [("run", "seed"), ("run", "dtype"), ("models", "engine"), ("captions", "source"),
                 ("captions", "seed"), ("sampler", "resolution"), ("sampler", "method"),
                 ("sampler", "base_respacing"), ("sampler", "upsample_respacing"),
                 ("sampler", "upsample_temperature")]
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
# the interval needs only the bootstrap SE (~7% relative error at 100 rounds); each round costs
# two metric evaluations, and with Inception features FID's 2048x2048 eigendecompositions dominate
DEFAULT_ROUNDS = 100


class RegressError(RuntimeError):
    """The comparison cannot be made (exit 2); the message says what is missing or differs."""


# ---------------------------------------------------------------- baseline

@dataclass
class Baseline:
    run_dir: Path
    config: SweepConfig
    run: dict  # run.json
    captions: list[str]


def load_baseline(run_dir: Path) -> Baseline:
    run_dir = Path(run_dir)
    for name in ("config.toml", "run.json", "captions.json"):
        if not (run_dir / name).is_file():
            raise RegressError(f"baseline {run_dir}: {name} not found (is it a sweep run directory?)")
    try:
        config = load_config(run_dir / "config.toml")
        run = store.read_json(run_dir / "run.json")
        captions = store.read_json(run_dir / "captions.json")
    except (ConfigError, ValueError) as e:
        raise RegressError(f"baseline {run_dir}: {e}") from None
    if sha256_json(captions) != run.get("captions_sha256"):
        raise RegressError(f"baseline {run_dir / 'captions.json'} does not match the captions_sha256 in run.json")
    if "generation_hash" not in run:
        raise RegressError(f"baseline {run_dir / 'run.json'} has no generation_hash")
    return Baseline(run_dir, config, run, list(captions))


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
    gen_hash = baseline.run["generation_hash"]
    out = {}
    for wanted in settings:
        setting = plan.sources.get(wanted.name, wanted)  # a setting sharing another's samples
        parts, nan = [], 0
        for k, (start, stop) in enumerate(plan.shards_of(wanted)):
            if start >= n:
                break
            ids = list(range(start, stop))
            key = shard_key(gen_hash, setting, ids, baseline.captions[start:stop])
            if store.finished_record(baseline.run_dir, setting.name, k, key) is None:
                npz = store.shard_paths(baseline.run_dir, setting.name, k)[0]
                raise RegressError(f"baseline shard {npz} is missing, unfinished or corrupt "
                                   "(no record with the expected key and sha256)")
            data = store.load_shard(baseline.run_dir, setting.name, k)
            parts.append({name: v[: n - start] for name, v in data.items() if name.startswith(store.FEATURE_PREFIX)})
            nan += int(data["nan_count"])
        out[wanted.name] = {"features": _concat(parts), "nan_count": nan}
    return out


def n_rows(side: dict) -> int:
    """Samples in one side's {"features": {name: [n, ...]}}."""
    return len(next(iter(side["features"].values())))


def _concat(parts: list[dict]) -> dict:
    names = [name for name in parts[0] if name.startswith(store.FEATURE_PREFIX)]
    return {name[len(store.FEATURE_PREFIX):]: np.concatenate([p[name] for p in parts]) for name in names}


# ---------------------------------------------------------------- protocol

def candidate_config(baseline: Baseline, candidate_dir: Path, config_path: Path | None, out_dir: Path) -> SweepConfig:
    """The config the candidate is sampled with: --config (or the baseline's), pointed at the
    candidate checkpoints and OUT/candidate, with the baseline's shard layout."""
    source = load_config(config_path) if config_path else baseline.config
    return source.with_overrides(
        models={"checkpoints": str(Path(candidate_dir).resolve())},
        run={"output_dir": str(Path(out_dir).resolve() / "candidate"),
             "shard_size": baseline.config["run"]["shard_size"], "save_images": "none"},
        captions={"n": baseline.config["captions"]["n"]})


def protocol_differences(base: SweepConfig, cand: SweepConfig) -> list[str]:
    diffs = [f"{s}.{k}: baseline {base[s][k]!r}, candidate {cand[s][k]!r}"
             for s, k in PROTOCOL_KEYS if base[s][k] != cand[s][k]]
    if base["engine_options"] != cand["engine_options"]:
        diffs.append(f"engine_options: baseline {base['engine_options']!r}, candidate {cand['engine_options']!r}")
    extra = [s.name for s in cand.settings if s not in base.settings]
    if extra:
        diffs.append(f"grid: settings {extra} are not in the baseline (baseline has "
                     f"{[s.name for s in base.settings]})")
    return diffs


def caption_difference(baseline: Baseline, config: SweepConfig, n: int) -> str | None:
    """Why the captions of `config` differ from the baseline's first n, or None."""
    try:
        captions = load_captions(config)
    except MissingComponentError as e:
        return f"captions: cannot load the candidate config's captions: {e}"
    for i in range(n):
        if i >= len(captions) or captions[i] != baseline.captions[i]:
            other = captions[i] if i < len(captions) else "<none>"
            return (f"captions: sample {i} is {other!r} under the candidate config but "
                    f"{baseline.captions[i]!r} in the baseline")
    return None


def check_files(base_files: dict, cand_files: dict, candidate_dir: Path, baseline_dir: str) -> None:
    """Refuse when the candidate run would not use the candidate folder (an engine that ignores
    [models.checkpoints] would compare the baseline with itself and pass), or when provenance
    files other than checkpoints from that folder differ (e.g. the feature extractor: the
    baseline's features would not be comparable)."""
    candidate_dir = Path(candidate_dir).resolve()
    in_folder = {cached_sha256(p): p.name for p in sorted(candidate_dir.iterdir()) if p.is_file()}
    used = set(cand_files.values())
    ignores = "does the engine read [models.checkpoints]?"
    if not used & set(in_folder):
        raise RegressError(
            f"the engine loads none of the files in the candidate folder {candidate_dir} (its provenance: "
            f"{', '.join(f'{k}={v[:12]}' for k, v in sorted(cand_files.items())) or 'no files'}); {ignores}")
    unused = sorted(name for sha, name in in_folder.items() if sha not in used)
    same_folder = baseline_dir and Path(baseline_dir).resolve() == candidate_dir
    if cand_files == base_files and unused and not same_folder:
        raise RegressError(
            f"the candidate run would load exactly the baseline's files, although {candidate_dir} holds "
            f"other files ({', '.join(unused)}); {ignores}")
    differing = sorted(k for k in set(base_files) | set(cand_files) if base_files.get(k) != cand_files.get(k))
    diffs = [f"{label}: baseline sha256 {base_files.get(label)}, candidate {cand_files.get(label)}"
             for label in differing if cand_files.get(label) not in in_folder]
    if diffs:
        raise RegressError("the candidate run would use other evaluation files than the baseline "
                           "(features not comparable):\n  " + "\n  ".join(diffs))


# ---------------------------------------------------------------- candidate run

def sample_run(config: SweepConfig, components: Components, captions: list[str], settings: list[Setting],
               save_images: str, progress: bool, log) -> dict[str, dict]:
    """Sample `settings` for captions (config captions.n of them) into config.output_dir, resuming
    finished shards; returns {setting: {"features", "nan_count"}} like `baseline_features`."""
    run_dir = config.output_dir
    gen_hash = generation_hash(config, components.provenance)
    write_run_files(run_dir, config, components.provenance, captions, gen_hash)
    plan = make_plan(config)
    sources = {s.name: plan.sources.get(s.name, s) for s in settings}  # settings sharing samples
    sampled = list(dict.fromkeys(sources.values()))
    todo, total = [], 0
    for setting in sampled:
        for k, (start, stop) in enumerate(plan.shards_of(setting)):
            ids = list(range(start, stop))
            key = shard_key(gen_hash, setting, ids, captions[start:stop])
            total += 1
            if store.finished_record(run_dir, setting.name, k, key, save_images) is None:
                todo.append((setting, k, ids, key))
    log(f"{run_dir}: {total - len(todo)} shards already finished, {len(todo)} to run")
    run_units(components, config, run_dir, todo, captions, save_images, progress, "")
    out = {}
    for setting in settings:
        shards = [store.load_shard(run_dir, sources[setting.name].name, k) for k in range(plan.counts[setting.name])]
        out[setting.name] = {"features": _concat(shards),
                             "nan_count": int(sum(int(s["nan_count"]) for s in shards))}
    return out


# ---------------------------------------------------------------- comparison

def parse_tolerances(items) -> dict[str, tuple[float, bool]]:
    """["fid=0.5", "precision=2%"] -> {"fid": (0.5, False), "precision": (2.0, True)}."""
    out = {}
    for item in items or ():
        m = re.fullmatch(r"\s*([a-z_]+)\s*=\s*([0-9.eE+-]+)\s*(%?)\s*", item)
        if not m:
            raise RegressError(f"--tolerance {item!r}: expected METRIC=VALUE or METRIC=PERCENT%")
        name, value, pct = m.group(1), m.group(2), m.group(3)
        if name not in HIGHER_IS_BETTER and name != "nan_count":
            raise RegressError(f"--tolerance {item!r}: unknown metric {name!r} "
                               f"(known: {', '.join([*HIGHER_IS_BETTER, 'nan_count'])})")
        try:
            v = float(value)
        except ValueError:
            raise RegressError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise RegressError(f"--tolerance {item!r}: must be a finite number >= 0")
        out[name] = (v, bool(pct))
    return out


def verdict(worse: float, low: float, high: float, se: float, tolerance: float) -> str:
    """See the module docstring; worse/low/high are the worsening and its interval."""
    if worse == 0 and se == 0:
        return "identical"
    if low > tolerance:
        return "regression"
    if worse > tolerance:
        return "possible regression"
    if high < 0:
        return "better"
    return "ok"


def compare_setting(compute, captions: list[str], base: dict, cand: dict, metric_names: list[str],
                    rounds: int, seed: int) -> dict:
    """Point values and paired-bootstrap replicates of candidate - baseline for one setting."""
    names = sorted(base["features"])
    if sorted(cand["features"]) != names:
        raise RegressError(f"feature arrays differ: baseline {names}, candidate {sorted(cand['features'])}")
    caps = np.asarray(captions, dtype=object)

    def statistic(arrays: dict) -> dict:
        arrays = dict(arrays)
        values = compute(arrays.pop("__captions__"), arrays)
        return {m: values[m] for m in metric_names}

    def with_caps(side):
        return dict(side["features"], __captions__=caps)

    point_b, point_c = statistic(with_caps(base)), statistic(with_caps(cand))
    replicates = paired_bootstrap(statistic, with_caps(base), with_caps(cand), rounds, seed)
    return {"baseline": point_b, "candidate": point_c, "replicates": replicates}


def judge(metric: str, b: float, c: float, replicates, z: float, tolerance: tuple[float, bool]) -> dict:
    d = c - b
    low, high, se = normal_interval(d, replicates, z)
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    worse, w_low, w_high = sign * d, min(sign * low, sign * high), max(sign * low, sign * high)
    tol = tolerance[0] / 100 * abs(b) if tolerance[1] else tolerance[0]
    return {"metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric], "baseline": b, "candidate": c,
            "difference": d, "ci_low": low, "ci_high": high, "se": se, "worsening": worse,
            "worsening_low": w_low, "worsening_high": w_high, "tolerance": tol,
            "verdict": verdict(worse, w_low, w_high, se, tol)}


def nan_row(base_nan: int, cand_nan: int, tolerance: tuple[float, bool]) -> dict:
    tol = tolerance[0] / 100 * base_nan if tolerance[1] else tolerance[0]
    worse = cand_nan - base_nan
    v = "identical" if worse == 0 else "regression" if worse > tol else "ok" if worse > 0 else "better"
    return {"metric": "nan_count", "higher_is_better": False, "baseline": base_nan, "candidate": cand_nan,
            "difference": worse, "tolerance": tol, "verdict": v}


# ---------------------------------------------------------------- the whole comparison

def regress(baseline_dir, candidate_dir, *, config_path=None, n: int | None = None, tolerances=None,
            rounds: int | None = None, images: bool = False, out_dir=None, level: float = 0.95,
            progress: bool = True, log=None) -> dict:
    """Compare the candidate checkpoint folder with a baseline run; returns the report dict
    (report["exit_code"]) and writes regress.json / regress.md in out_dir. Raises RegressError
    when the comparison cannot be made."""
    log = log or (lambda msg: click.echo(msg, err=True))
    baseline = load_baseline(Path(baseline_dir))
    candidate_dir = Path(candidate_dir)
    if not candidate_dir.is_dir():
        raise RegressError(f"candidate checkpoint folder not found: {candidate_dir}")
    out_dir = Path(out_dir) if out_dir else Path("runs") / "regress" / candidate_dir.resolve().name
    tolerances = parse_tolerances(tolerances) if not isinstance(tolerances, dict) else tolerances
    try:
        config = candidate_config(baseline, candidate_dir, Path(config_path) if config_path else None, out_dir)
    except ConfigError as e:
        raise RegressError(str(e)) from None
    base_cfg = baseline.config
    total = base_cfg["captions"]["n"]
    n_req = total if n is None else int(n)
    if n_req < 2:
        raise RegressError(f"-n must be at least 2, got {n_req}")
    if n_req > total:
        raise RegressError(f"-n {n_req}: the baseline {baseline.run_dir} has features for only {total} samples "
                           f"per setting; rerun its sweep with [captions] n >= {n_req} or use -n <= {total}")
    n_eff = aligned_n(n_req, total, base_cfg["run"]["shard_size"], config["run"]["batch_size"])

    diffs = protocol_differences(base_cfg, config)
    if config_path:
        diff = caption_difference(baseline, config, n_eff)
        if diff:
            diffs.append(diff)
    if diffs:
        raise RegressError("protocol mismatch with the baseline " + str(baseline.run_dir) + ":\n  "
                           + "\n  ".join(diffs))
    settings = config.settings
    metric_names = [m for m in config["metrics"]["names"] if m in HIGHER_IS_BETTER]
    rounds = DEFAULT_ROUNDS if rounds is None else int(rounds)
    if rounds < 2:
        raise RegressError(f"--bootstrap must be at least 2, got {rounds}")
    if not 0 < level < 1:
        raise RegressError(f"--level must be between 0 and 1, got {level}")
    z = normal_z(level, max(1, len(settings) * len(metric_names)))
    config = config.with_overrides(captions={"n": n_eff})
    captions = baseline.captions[:n_eff]
    base_side = baseline_features(baseline, settings, n_eff)

    try:
        components = build_components(config, resolve_device(config))
        base_files = baseline.run.get("provenance", {}).get("files", {})
        cand_files = components.provenance.get("files", {})
        check_files(base_files, cand_files, candidate_dir, base_cfg["models"]["checkpoints"])
        cand_side = sample_run(config, components, captions, settings, "png" if images else "none",
                               progress, log)
    except (MissingComponentError, SweepError) as e:
        raise RegressError(str(e)) from None

    def compute(caps, feats):
        return components.compute_metrics(feats, list(caps), False)

    rows, sizes = [], {}
    for setting in settings:
        b, c = base_side[setting.name], cand_side[setting.name]
        sizes[setting.name] = n_s = n_rows(b)  # fewer than n_eff for steps settings under steps_n
        if n_rows(c) != n_s:
            raise RegressError(f"{setting.name}: the baseline has {n_s} samples, the candidate {n_rows(c)}")
        log(f"{setting.name}: paired bootstrap, {rounds} rounds")
        try:
            result = compare_setting(compute, captions[:n_s], b, c, metric_names, rounds, config["run"]["seed"])
        except (KeyError, ValueError) as e:
            raise RegressError(f"{setting.name}: cannot compute the metrics: {type(e).__name__}: {e}") from None
        for m in metric_names:
            row = judge(m, result["baseline"][m], result["candidate"][m], result["replicates"][m], z,
                        tolerances.get(m, (0.0, False)))
            rows.append({"setting": setting.name, **row})
        rows.append({"setting": setting.name, **nan_row(b["nan_count"], c["nan_count"],
                                                         tolerances.get("nan_count", (0.0, False)))})

    report = {
        "baseline": str(baseline.run_dir.resolve()), "candidate": str(candidate_dir.resolve()),
        "out_dir": str(out_dir.resolve()), "n_requested": n_req, "n": n_eff,
        "n_fewer": {k: v for k, v in sizes.items() if v != n_eff}, "bootstrap_rounds": rounds,
        "level": level, "comparisons": len(settings) * len(metric_names), "z": z,
        "settings": [s.name for s in settings], "metrics": metric_names, "rows": rows,
        "regressions": [f"{r['setting']}/{r['metric']}" for r in rows if r["verdict"] == "regression"],
        "possible_regressions": [f"{r['setting']}/{r['metric']}" for r in rows
                                 if r["verdict"] == "possible regression"],
        "protocol": {"seed": config["run"]["seed"], "dtype": config["run"]["dtype"],
                     "engine": config["models"]["engine"], "sampler": config["sampler"],
                     "captions_sha256": sha256_json(captions), "bootstrap_seed": config["run"]["seed"],
                     "batch_size": config["run"]["batch_size"]},
        "candidate_run": str(config.output_dir),
        "provenance": {
            "baseline_files": base_files, "candidate_files": cand_files,
            "baseline_config_hash": baseline.run.get("config_hash"), "candidate_config_hash": config.config_hash,
            "baseline_versions": baseline.run.get("versions", {}), "versions": package_versions(),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
    }
    if images:
        from glide_eval.regress_images import compare_images

        report["images"] = compare_images(baseline, config, settings, captions, base_side, progress, log)
    report["exit_code"] = EXIT_REGRESSION if report["regressions"] else EXIT_OK
    write_report(out_dir, report)
    return report


# ---------------------------------------------------------------- report

def _fmt(x) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.6g}"


def markdown(report: dict) -> str:
    lines = [
        "# Checkpoint regression test", "",
        f"- baseline run: `{report['baseline']}`", f"- candidate checkpoints: `{report['candidate']}`",
        f"- samples per setting: {report['n']} (first sample ids of the baseline; requested "
        f"{report['n_requested']})" + "".join(f"; {k}: {v}" for k, v in report.get("n_fewer", {}).items()),
        f"- intervals: paired bootstrap SE ({report['bootstrap_rounds']} rounds), difference ± "
        f"{report['z']:.3f}·SE ({report['level']:.0%} family-wise over {report['comparisons']} comparisons)",
        f"- result: **{'REGRESSION' if report['regressions'] else 'no regression'}**"
        + (f" ({', '.join(report['regressions'])})" if report["regressions"] else ""),
        *([f"- possible regressions (worse beyond tolerance, but within sampling noise): "
           f"{', '.join(report['possible_regressions'])}"] if report["possible_regressions"] else []), "",
        "| setting | metric | better | baseline | candidate | difference [interval] | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        interval = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if "ci_low" in r else ""
        verdict_text = f"**{r['verdict']}**" if r["verdict"] == "regression" else r["verdict"]
        lines.append(f"| {r['setting']} | {r['metric']} | {'higher' if r['higher_is_better'] else 'lower'} | "
                     f"{_fmt(r['baseline'])} | {_fmt(r['candidate'])} | {_fmt(r['difference'])}{interval} | "
                     f"{_fmt(r['tolerance'])} | {verdict_text} |")
    if "images" in report:
        from glide_eval.regress_images import images_markdown

        lines += ["", *images_markdown(report["images"])]
    p = report["provenance"]
    lines += ["", "## Provenance", "", "| file | baseline sha256 | candidate sha256 |", "|---|---|---|"]
    for label in sorted(set(p["baseline_files"]) | set(p["candidate_files"])):
        lines.append(f"| {label} | `{p['baseline_files'].get(label, '-')}` | "
                     f"`{p['candidate_files'].get(label, '-')}` |")
    lines += ["", f"- config hash: baseline `{p['baseline_config_hash']}`, candidate `{p['candidate_config_hash']}`",
              f"- versions: {', '.join(f'{k} {v}' for k, v in sorted(p['versions'].items()))}",
              f"- finished at {p['finished_at']}", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict) -> None:
    store.write_json(out_dir / "regress.json", report)
    store.atomic_write_text(out_dir / "regress.md", markdown(report))


# ---------------------------------------------------------------- CLI

@click.command("regress")
@click.option("--baseline", "baseline_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory of the baseline sweep (config.toml, run.json, captions.json, shards/).")
@click.option("--candidate", "candidate_dir", required=True, type=click.Path(file_okay=False),
              help="Folder with the candidate checkpoint files (replaces [models.checkpoints]).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Sample the candidate with this config (default: the baseline's config.toml); "
                   "its protocol must match the baseline's.")
@click.option("-n", "n", type=click.IntRange(min=2),
              help="Compare the first N sample ids (default: all of the baseline's).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="METRIC=VALUE[%]",
              help="Allowed worsening, absolute or percent of the baseline value (default 0). Repeatable.")
@click.option("--bootstrap", "rounds", type=click.IntRange(min=2),
              help=f"Paired bootstrap rounds (default {DEFAULT_ROUNDS}).")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Family-wise confidence level of the intervals (Bonferroni over settings x metrics).")
@click.option("--images", is_flag=True, help="Also compare the sample images pixel by pixel.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: runs/regress/CANDIDATE_NAME).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def regress_command(ctx, baseline_dir, candidate_dir, config_path, n, tolerances, rounds, level, images,
                    out_dir, no_progress, as_json):
    """Gate a candidate checkpoint against a baseline sweep under the baseline's protocol.

    Exit status: 0 no regression, 1 regression beyond tolerance, 2 could not evaluate.
    """
    try:
        report = regress(baseline_dir, candidate_dir, config_path=config_path, n=n, tolerances=tolerances,
                         rounds=rounds, images=images, out_dir=out_dir, level=level, progress=not no_progress)
    except (RegressError, ConfigError, MissingComponentError, SweepError) as e:
        if as_json:
            echo_json({"exit_code": EXIT_ERROR, "error": str(e)})
        click.echo(f"Error: could not evaluate: {e}", err=True)
        ctx.exit(EXIT_ERROR)
    if as_json:
        echo_json(report)
    else:
        click.echo(markdown(report))
        click.echo(f"report: {Path(report['out_dir']) / 'regress.md'}", err=True)
    ctx.exit(report["exit_code"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(regress_command())
