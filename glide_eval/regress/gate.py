"""`regress()`: the whole comparison of a candidate checkpoint folder with a baseline run."""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glide_eval.regress.baseline import Baseline, RegressError, aligned_n, baseline_features, load_baseline, n_rows
from glide_eval.regress.candidate import sample_run
from glide_eval.regress.compare import (
    DEFAULT_ROUNDS,
    compare_setting,
    compare_setting_paired,
    judge,
    nan_row,
    parse_tolerances,
)
from glide_eval.regress.images import compare_images
from glide_eval.regress.protocol import candidate_config, caption_difference, check_files, protocol_differences
from glide_eval.regress.report import BOOTSTRAP, write_report
from glide_eval.sweep.components import Components, resolve_device
from glide_eval.sweep.config import ConfigError, Setting, SweepConfig
from glide_eval.sweep.engines import build_components
from glide_eval.sweep.errors import MissingComponentError, SweepError
from metrics.names import HIGHER_IS_BETTER
from metrics.normal import normal_z
from metrics.prc import DEFAULT_K
from storage import package_versions, sha256_json

# the fewest samples each metric can be computed on (precision/recall: k nearest neighbours
# besides the sample itself); the paired bootstrap needs 2 of every metric
MIN_SAMPLES = {"fid": 2, "is": 2, "precision": DEFAULT_K + 1, "recall": DEFAULT_K + 1, "clip_score": 2}

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


@dataclass
class Request:
    """A checked regression request: what is compared, on how many samples, how strictly."""

    baseline: Baseline
    candidate_dir: Path
    out_dir: Path
    config: SweepConfig  # the candidate's, for the first n_eff captions
    n_requested: int
    n_eff: int
    settings: list[Setting]
    metric_names: list[str]
    tolerances: dict[str, tuple[float, bool]]
    rounds: int
    level: float
    z: float


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _requested_n(baseline: Baseline, n: int | None) -> int:
    total = baseline.config.captions.n
    n_req = total if n is None else int(n)
    if n_req < 2:
        raise RegressError(f"-n must be at least 2, got {n_req}")
    if n_req > total:
        raise RegressError(
            f"-n {n_req}: the baseline {baseline.run_dir} has features for only {total} samples "
            f"per setting; rerun its sweep with [captions] n >= {n_req} or use -n <= {total}"
        )
    return n_req


def check_enough_samples(config: SweepConfig, settings: list[Setting], metric_names: list[str], n: int) -> None:
    """RegressError before any sampling when a setting would have fewer samples than a metric needs."""
    for setting in settings:
        n_s = min(n, config.n_samples(setting))
        short = [f"{m} needs {MIN_SAMPLES[m]}" for m in metric_names if n_s < MIN_SAMPLES.get(m, 2)]
        if short:
            raise RegressError(
                f"{setting.name} would be compared on {n_s} samples, too few: {', '.join(short)}; "
                f"use a larger -n or leave those metrics out of [metrics] names (--config)"
            )


def prepare(baseline_dir, candidate_dir, config_path, n, tolerances, rounds, out_dir, level) -> Request:
    """Load the baseline, build the candidate config and check the protocol; RegressError otherwise."""
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
    n_req = _requested_n(baseline, n)
    n_eff = aligned_n(n_req, baseline.config.captions.n, baseline.config.run.shard_size, config.run.batch_size)
    diffs = protocol_differences(baseline.config, config)
    if config_path and (diff := caption_difference(baseline, config, n_eff)):
        diffs.append(diff)
    if diffs:
        raise RegressError(
            "protocol mismatch with the baseline " + str(baseline.run_dir) + ":\n  " + "\n  ".join(diffs)
        )
    settings = config.settings
    metric_names = [m for m in config.metrics.names if m in HIGHER_IS_BETTER]
    check_enough_samples(config, settings, metric_names, n_eff)
    rounds = DEFAULT_ROUNDS if rounds is None else int(rounds)
    if rounds < 2:
        raise RegressError(f"--bootstrap must be at least 2, got {rounds}")
    if not 0 < level < 1:
        raise RegressError(f"--level must be between 0 and 1, got {level}")
    z = normal_z(level, max(1, len(settings) * len(metric_names)))
    return Request(
        baseline,
        candidate_dir,
        out_dir,
        config.with_overrides(captions={"n": n_eff}),
        n_req,
        n_eff,
        settings,
        metric_names,
        tolerances,
        rounds,
        level,
        z,
    )


def sample_candidate(
    req: Request, captions: list[str], images: bool, progress: bool, log: Callable[[str], None]
) -> tuple[Components, dict, dict]:
    """(components, baseline files, candidate side) after checking which files the candidate run loads."""
    try:
        components = build_components(req.config, resolve_device(req.config))
        base_files = req.baseline.run.get("provenance", {}).get("files", {})
        check_files(
            base_files,
            components.provenance.get("files", {}),
            req.candidate_dir,
            req.baseline.config.models.checkpoints,
        )
        side = sample_run(req.config, components, captions, req.settings, "png" if images else "none", progress, log)
    except (MissingComponentError, SweepError) as e:
        raise RegressError(str(e)) from None
    return components, base_files, side


def compare_sides(
    req: Request,
    components: Components,
    captions: list[str],
    base_side: dict,
    cand_side: dict,
    log: Callable[[str], None],
) -> tuple[list[dict], dict[str, int]]:
    """(report rows, samples per setting): every metric of every setting, then its NaN count."""

    rows, sizes = [], {}
    for setting in req.settings:
        b, c = base_side[setting.name], cand_side[setting.name]
        sizes[setting.name] = n_s = n_rows(b)  # fewer than n_eff for steps settings under steps_n
        if n_rows(c) != n_s:
            raise RegressError(f"{setting.name}: the baseline has {n_s} samples, the candidate {n_rows(c)}")
        try:
            result = _compare(req, components, captions[:n_s], b, c, setting.name, log)
        except (KeyError, ValueError) as e:
            raise RegressError(f"{setting.name}: cannot compute the metrics: {type(e).__name__}: {e}") from None
        for m in req.metric_names:
            row = judge(
                m,
                result["baseline"][m],
                result["candidate"][m],
                result.get("replicates", {}).get(m),
                req.z,
                req.tolerances.get(m, (0.0, False)),
                se=result.get("se", {}).get(m),
            )
            rows.append({"setting": setting.name, **row})
        rows.append(
            {
                "setting": setting.name,
                **nan_row(b["nan_count"], c["nan_count"], req.tolerances.get("nan_count", (0.0, False))),
            }
        )
    return rows, sizes


INFLUENCE = "paired SE from influence values (metrics.paired_differences)"


def _compare(req: Request, components: Components, captions, b: dict, c: dict, name: str, log) -> dict:
    """Paired intervals from influence values when the engine gives `compute_differences` (the sweep's
    engines), else from the paired bootstrap over `compute_metrics` (`--bootstrap` rounds)."""
    if components.compute_differences is not None:
        log(f"{name}: paired differences (influence values)")
        comparisons = len(req.settings) * len(req.metric_names)
        return compare_setting_paired(components.compute_differences, b, c, req.metric_names, comparisons)

    def compute(caps, feats):
        return components.compute_metrics(feats, list(caps), False)

    log(f"{name}: paired bootstrap, {req.rounds} rounds")
    return compare_setting(compute, captions, b, c, req.metric_names, req.rounds, req.config.run.seed)


def build_report(
    req: Request, rows: list[dict], sizes: dict[str, int], captions: list[str], base_files: dict, cand_files: dict
) -> dict:
    config, baseline = req.config, req.baseline
    return {
        "baseline": str(baseline.run_dir.resolve()),
        "candidate": str(req.candidate_dir.resolve()),
        "out_dir": str(req.out_dir.resolve()),
        "n_requested": req.n_requested,
        "n": req.n_eff,
        "n_fewer": {k: v for k, v in sizes.items() if v != req.n_eff},
        "bootstrap_rounds": req.rounds,
        "level": req.level,
        "comparisons": len(req.settings) * len(req.metric_names),
        "z": req.z,
        "settings": [s.name for s in req.settings],
        "metrics": req.metric_names,
        "rows": rows,
        "regressions": [f"{r['setting']}/{r['metric']}" for r in rows if r["verdict"] == "regression"],
        "possible_regressions": [
            f"{r['setting']}/{r['metric']}" for r in rows if r["verdict"] == "possible regression"
        ],
        "protocol": {
            "seed": config.run.seed,
            "dtype": config.run.dtype,
            "engine": config.models.engine,
            "sampler": dataclasses.asdict(config.sampler),
            "captions_sha256": sha256_json(captions),
            "bootstrap_seed": config.run.seed,
            "batch_size": config.run.batch_size,
        },
        "candidate_run": str(config.output_dir),
        "provenance": {
            "baseline_files": base_files,
            "candidate_files": cand_files,
            "baseline_config_hash": baseline.run.get("config_hash"),
            "candidate_config_hash": config.config_hash,
            "baseline_versions": baseline.run.get("versions", {}),
            "versions": package_versions(),
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
        },
    }


def regress(
    baseline_dir,
    candidate_dir,
    *,
    config_path=None,
    n: int | None = None,
    tolerances=None,
    rounds: int | None = None,
    images: bool = False,
    out_dir=None,
    level: float = 0.95,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Compare the candidate checkpoint folder with a baseline run; returns the report dict
    (report["exit_code"]) and writes regress.json / regress.md in out_dir. Raises RegressError
    when the comparison cannot be made."""
    log = log or _stderr
    req = prepare(baseline_dir, candidate_dir, config_path, n, tolerances, rounds, out_dir, level)
    captions = req.baseline.captions[: req.n_eff]
    base_side = baseline_features(req.baseline, req.settings, req.n_eff)
    components, base_files, cand_side = sample_candidate(req, captions, images, progress, log)
    rows, sizes = compare_sides(req, components, captions, base_side, cand_side, log)
    report = build_report(req, rows, sizes, captions, base_files, components.provenance.get("files", {}))
    report["interval_method"] = INFLUENCE if components.compute_differences is not None else BOOTSTRAP
    if images:
        report["images"] = compare_images(req.baseline, req.config, req.settings, captions, base_side, progress, log)
    report["exit_code"] = EXIT_REGRESSION if report["regressions"] else EXIT_OK
    write_report(req.out_dir, report)
    return report
