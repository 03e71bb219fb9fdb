"""Which automatic metric agrees with the raters: metric values of a run's settings against
the settings' human-preference Elo (`glide-eval agreement RUN_DIR judgments.csv`).

Per question of the judgments and per metric column of the results (every name in
`metrics.names.HIGHER_IS_BETTER`, oriented so that better is higher):

- ``kendall_tau``: Kendall's tau-b between the oriented metric values and the Elo ratings;
- ``spearman_rho``: Spearman's rank correlation (average ranks for ties);
- ``pair_agreement``: the share of setting pairs that the metric and the raters order the
  same way (a tie in either counts half), ``(1 + tau_a) / 2``;
- ``best_share``: the share of replicates in which this metric has the highest tau of the
  question's metrics (which metric agrees best, with its uncertainty).

Intervals resample both sides at once. Replicate r pairs the r-th Elo bootstrap replicate
(a multinomial resample of the judgments, `human_eval.elo`) with a draw of every setting's
metric value from a normal with the value's standard error (the results' ``<metric>_se``
column, from per-sample influence values; a metric without one is not resampled, and the
table says so); the interval is the percentile interval of the statistic over the replicates,
and ``<statistic>_se`` their standard deviation. What it covers is the statistic's expected
value at this study's size (its number of judgments and samples), as the metrics' own
intervals cover E[FID_n]: with noisy values a rank correlation is pulled towards 0, and the
replicates, noisier still, are pulled the same way, which puts the interval around the
expectation. Simulated coverage (tests/test_agreement.py, slow) is 97-98% for nominal 95%
(89-100% over other simulated regimes, README): conservative, because a replicate's centre
varies less than the estimate does, and because settings are drawn independently although
they share captions and noise. Where a metric's
expected correlation is near ±1 the interval may end short of ±1 (a perfectly tracking metric
measured with noise has an expected tau below 1).

Judgment model names map to the run's settings: a setting's name (``cfg-3``,
``steps-ddim-50``, ``unguided``) or the guidance spelling ``FAMILY:SCALE`` / ``unguided`` /
``none`` (`samplers.guidance_specs`, the one parser), matched with the results' ``family``
and ``scale`` columns; ``RUN/NAME`` (the judging page's prefix for names found in two runs)
when RUN is this run's folder name. Other models are left out, with a warning.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import rankdata

from human_eval.elo import DEFAULT_LEVEL, DEFAULT_ROUNDS, EloResult, analyze
from human_eval.judgments import Judgments
from human_eval.names import parse_guidance
from metrics.names import HIGHER_IS_BETTER
from reports import html as page
from reports.figure6 import save_figure
from samplers.guidance_specs import is_unguided
from storage import atomic_write_text, atomic_write_with, package_versions, sha256_file, write_json

STATISTICS = ("kendall_tau", "spearman_rho", "pair_agreement")
COLUMNS = [
    "question",
    "metric",
    "higher_is_better",
    "n_settings",
    *(f"{s}{suffix}" for s in STATISTICS for suffix in ("", "_se", "_lower", "_upper")),
    "best_share",
    "sampling_noise",
    "replicates",
    "level",
]


class AgreementError(ValueError):
    """The judgments and the run cannot be compared; the message says why."""


# ---------------------------------------------------------------- names -> settings
def match_models(models: list[str], results: pd.DataFrame, run_name: str | None = None) -> tuple[dict, list[str]]:
    """({model: setting} for the judged models that are settings of `results`, [the others]).

    A setting judged under two names (``cfg:3`` and ``cfg-3``) is an AgreementError."""
    for column in ("setting", "family", "scale"):
        if column not in results.columns:
            raise AgreementError(f"results: column {column!r} is missing")
    settings = list(results["setting"])
    found: dict[str, str] = {}
    unmatched = []
    for model in models:
        setting = _setting_of(model.strip(), results, settings, run_name)
        if setting is None:
            unmatched.append(model)
        else:
            found[model] = setting
    twice = {}
    for model, setting in found.items():
        twice.setdefault(setting, []).append(model)
    twice = {s: ms for s, ms in twice.items() if len(ms) > 1}
    if twice:
        listed = "; ".join(f"{s}: {', '.join(map(repr, ms))}" for s, ms in twice.items())
        raise AgreementError(f"a setting is judged under two model names ({listed}); use one name per setting")
    return found, unmatched


def _setting_of(name: str, results: pd.DataFrame, settings: list[str], run_name: str | None) -> str | None:
    prefix, slash, rest = name.partition("/")
    if slash:
        if run_name is None or prefix.strip() != run_name:
            return None  # a setting of another run
        name = rest.strip()
    if name in settings:
        return name
    if is_unguided(name):
        rows = results[results["family"] == "none"]
    else:
        parsed = parse_guidance(name)
        if parsed is None:
            return None
        family, scale = parsed
        rows = results[(results["family"] == family) & np.isclose(results["scale"].astype(float), scale)]
    return str(rows["setting"].iloc[0]) if len(rows) == 1 else None


# ---------------------------------------------------------------- the statistics
def pair_signs(values: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) for every pair i < j, along the last axis: (..., M) -> (..., M(M-1)/2)."""
    i, j = np.triu_indices(values.shape[-1], k=1)
    return np.sign(values[..., i] - values[..., j])


def statistics(metric: np.ndarray, elo: np.ndarray) -> dict[str, np.ndarray]:
    """Kendall's tau-b, Spearman's rho and the pair agreement of metric vs elo along the last
    axis (any leading replicate axes); NaN where one side has every value tied."""
    metric, elo = np.asarray(metric, np.float64), np.asarray(elo, np.float64)
    sm, se = pair_signs(metric), pair_signs(elo)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sm * se).sum(-1) / np.sqrt((sm * sm).sum(-1) * (se * se).sum(-1))
        agreement = 0.5 + 0.5 * (sm * se).mean(-1)
        rm = rankdata(metric, axis=-1) - (metric.shape[-1] + 1) / 2
        re = rankdata(elo, axis=-1) - (elo.shape[-1] + 1) / 2
        rho = (rm * re).sum(-1) / np.sqrt((rm * rm).sum(-1) * (re * re).sum(-1))
    return {"kendall_tau": tau, "spearman_rho": rho, "pair_agreement": agreement}


def _rng(seed: int, question: str, metric: str) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(question.encode()), zlib.crc32(metric.encode())])
    )


@dataclass
class Agreement:
    """One question's agreement table plus what was compared."""

    question: str
    table: pd.DataFrame  # COLUMNS
    points: pd.DataFrame  # one row per matched setting: model, setting, elo (+ interval), metric values
    left_out: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def question_agreement(
    result: EloResult,
    results: pd.DataFrame,
    run_name: str | None = None,
    metrics: list[str] | None = None,
    seed: int = 0,
    left_out: list[str] = (),
    dropped: int = 0,
) -> Agreement:
    """The agreement of each metric of `results` with one question's Elo `result` (fitted on the
    judgments between settings of this run; `left_out` models and their `dropped` judgments are
    reported as a warning)."""
    mapping, unmatched = match_models(result.models, results, run_name)
    left_out = sorted({*left_out, *unmatched})
    warnings = list(result.warnings)
    if left_out:
        warnings.append(
            f"judged models that are not settings of this run, left out with their {dropped} judgment(s): "
            f"{', '.join(left_out)}"
        )
    if len(mapping) < 3:
        raise AgreementError(
            f"question {result.question!r}: {len(mapping)} judged model(s) match settings of this run "
            f"({', '.join(mapping) or 'none'}; settings: {', '.join(results['setting'])}); "
            "agreement needs at least 3"
        )
    index = {m: k for k, m in enumerate(result.models)}
    models = sorted(mapping, key=lambda m: -result.ratings[index[m]])
    cols = [index[m] for m in models]
    rows = results.set_index("setting").loc[[mapping[m] for m in models]]
    elo, elo_reps = result.ratings[cols], result.replicates[:, cols]
    ratings = result.ratings_table().set_index("model").loc[models]
    points = pd.DataFrame(
        {"question": result.question, "model": models, "setting": [mapping[m] for m in models]}
        | {"elo": elo, "elo_lower": ratings["lower"].to_numpy(), "elo_upper": ratings["upper"].to_numpy()}
    )
    names = [m for m in (metrics or HIGHER_IS_BETTER) if m in results.columns and m in HIGHER_IS_BETTER]
    tail = (1 - result.level) / 2
    out, draws = [], {}
    for metric in names:
        values = rows[metric].to_numpy(np.float64)
        ok = np.isfinite(values)
        if ok.sum() < 3:
            warnings.append(f"{metric}: {int(ok.sum())} judged setting(s) have a value; needs 3, left out")
            continue
        points[metric] = values
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        se_col = f"{metric}_se"
        se = rows[se_col].to_numpy(np.float64) if se_col in rows.columns else np.zeros_like(values)
        noisy = bool(np.isfinite(se[ok]).all() and (se[ok] > 0).any())
        se = np.where(np.isfinite(se), se, 0.0)
        point = statistics(sign * values[ok], elo[ok])
        reps = len(elo_reps)
        drawn = values[ok] + se[ok] * _rng(seed, result.question, metric).standard_normal((reps, int(ok.sum())))
        replicated = statistics(sign * drawn, elo_reps[:, ok])
        draws[metric] = replicated["kendall_tau"]
        row = {
            "question": result.question,
            "metric": metric,
            "higher_is_better": HIGHER_IS_BETTER[metric],
            "n_settings": int(ok.sum()),
        }
        for stat in STATISTICS:
            kept = replicated[stat][np.isfinite(replicated[stat])]
            lower, upper = np.quantile(kept, [tail, 1 - tail]) if len(kept) > 1 else (math.nan, math.nan)
            row |= {
                stat: float(point[stat]),
                f"{stat}_se": float(kept.std(ddof=1)) if len(kept) > 1 else math.nan,
                f"{stat}_lower": float(lower),
                f"{stat}_upper": float(upper),
            }
        row |= {
            "sampling_noise": f"normal({se_col})" if noisy else f"none (no {se_col})",
            "replicates": reps,
            "level": result.level,
        }
        out.append(row)
    table = pd.DataFrame(out, columns=[c for c in COLUMNS if c != "best_share"])
    table.insert(COLUMNS.index("best_share"), "best_share", _best_share(table, draws))
    return Agreement(result.question, table, points, left_out, warnings)


def _best_share(table: pd.DataFrame, draws: dict[str, np.ndarray]) -> list[float]:
    """Per metric: the share of replicates in which its tau is the highest (ties shared)."""
    if table.empty or not draws or len(next(iter(draws.values()))) == 0:
        return [math.nan] * len(table)
    taus = np.stack([np.nan_to_num(draws[m], nan=-2.0) for m in table["metric"]], axis=1)  # (R, metrics)
    best = taus == taus.max(axis=1, keepdims=True)
    return list((best / best.sum(axis=1, keepdims=True)).mean(axis=0))


# ---------------------------------------------------------------- a run and a judgments file
@dataclass
class AgreementRun:
    """Every question's agreement, the Elo fits behind them, and how they were made."""

    items: list[Agreement]
    elo: list[EloResult]
    judgments: Judgments
    options: dict

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "agreement": pd.concat([a.table for a in self.items], ignore_index=True),
            "settings": pd.concat([a.points for a in self.items], ignore_index=True),
        }

    def warnings(self) -> list[str]:
        return [f"question {a.question}: {w}" for a in self.items for w in a.warnings]


def agreement_from_judgments(
    results: pd.DataFrame,
    judgments: Judgments,
    run_name: str | None = None,
    question: str | None = None,
    metrics: list[str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    l2: float = 0.0,
    level: float = DEFAULT_LEVEL,
    progress: bool = False,
) -> AgreementRun:
    """Fit each question's Elo with its bootstrap (FitError) and compare it with the metrics of
    `results` (AgreementError)."""
    if rounds < 2:
        raise AgreementError(f"agreement needs at least 2 bootstrap rounds for its intervals, got {rounds}")
    unknown = sorted(set(metrics or ()) - set(HIGHER_IS_BETTER))
    if unknown:
        raise AgreementError(f"unknown metric(s) {unknown}; known: {sorted(HIGHER_IS_BETTER)}")
    frame = judgments.frame
    mapping, _ = match_models(sorted(set(frame["model_a"]) | set(frame["model_b"])), results, run_name)
    keep = frame["model_a"].isin(mapping) & frame["model_b"].isin(mapping)
    if not keep.any():
        raise AgreementError(
            f"no judgment compares two settings of this run (settings: {', '.join(results['setting'])}; "
            f"judged models: {', '.join(sorted(set(frame['model_a']) | set(frame['model_b'])))})"
        )
    # the Elo of the run's settings from the judgments between them (another model, judged a few
    # times, would make bootstrap replicates separable and shrink the intervals)
    elo = analyze(frame[keep], question, None, rounds, seed, l2, level, progress=progress)
    items = []
    for r in elo:
        other = frame[~keep & (frame["question"] == r.question)]
        left_out = sorted((set(other["model_a"]) | set(other["model_b"])) - set(mapping))
        items.append(question_agreement(r, results, run_name, metrics, seed, left_out, len(other)))
    options = {"question": question, "metrics": metrics, "rounds": rounds, "seed": seed, "l2": l2, "level": level}
    return AgreementRun(items, elo, judgments, options)


def provenance(run: AgreementRun, results_path, judgments_path) -> dict:
    """How the agreement tables were made: both inputs with their sha256, options, versions."""
    return {
        "command": "glide-eval agreement",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "results": {"path": str(Path(results_path).resolve()), "sha256": sha256_file(results_path)},
        "judgments": {
            "path": str(Path(judgments_path).resolve()),
            "sha256": sha256_file(judgments_path),
            "format": run.judgments.format,
            "rows_read": run.judgments.rows_read,
            "rows_used": int(len(run.judgments.frame)),
            "rows_dropped": run.judgments.rows_dropped,
        },
        "options": run.options,
        "questions": [
            {**r.summary(), "settings": dict(zip(a.points["model"], a.points["setting"])), "left_out": a.left_out}
            for r, a in zip(run.elo, run.items)
        ],
        "warnings": run.warnings(),
        "estimator": ESTIMATOR,
        "versions": package_versions(),
    }


ESTIMATOR = (
    "per question and metric: Kendall tau-b, Spearman rho and the share of setting pairs ordered alike between "
    "the metric (oriented: better = higher) and the Bradley-Terry Elo of the settings; percentile intervals over "
    "replicates that pair each multinomial bootstrap replicate of the judgments with a normal draw of every "
    "setting's metric value (sd = <metric>_se)"
)


def write_agreement(run: AgreementRun, out_dir, provenance_record: dict) -> dict[str, Path]:
    """agreement and settings as .csv and .parquet, agreement.{png,pdf} and provenance.json in
    `out_dir`, each written atomically; returns their paths."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for name, table in run.tables().items():
        csv, parquet = out_dir / f"{name}.csv", out_dir / f"{name}.parquet"
        atomic_write_text(csv, table.to_csv(index=False))
        atomic_write_with(parquet, lambda tmp, t=table: t.to_parquet(tmp, index=False))
        paths[f"{name}_csv"], paths[f"{name}_parquet"] = csv, parquet
    for path in plot_agreement(run.tables()["agreement"], out_dir):
        paths[f"figure_{path.suffix[1:]}"] = path
    path = out_dir / "provenance.json"
    write_json(path, provenance_record)
    paths["provenance"] = path
    return paths


# ---------------------------------------------------------------- the figure and the table
def plot_agreement(table: pd.DataFrame, out_dir, stem: str = "agreement") -> list[Path]:
    """STEM.png and STEM.pdf: per question, each metric's Kendall tau and Spearman rho with
    their intervals (metrics ordered by tau, the best on top); none when the table is empty."""
    if table.empty:
        return []
    questions = list(dict.fromkeys(table["question"]))
    n_metrics = int(table.groupby("question").size().max())
    fig, axes = plt.subplots(
        1, len(questions), figsize=(5.0 * len(questions), 1.6 + 0.45 * n_metrics), squeeze=False, sharex=True
    )
    for ax, q in zip(axes[0], questions):
        part = table[table["question"] == q].sort_values("kendall_tau", na_position="first")
        y = np.arange(len(part))
        for offset, stat, colour, label in (
            (0.12, "kendall_tau", "tab:blue", "Kendall τ"),
            (-0.12, "spearman_rho", "tab:orange", "Spearman ρ"),
        ):
            values = part[stat].to_numpy(float)
            err = np.abs(np.stack([values - part[f"{stat}_lower"], part[f"{stat}_upper"] - values]))
            ax.errorbar(values, y + offset, xerr=err, fmt="o", color=colour, capsize=2, label=label)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(y, [_metric_label(r) for _, r in part.iterrows()])
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("rank correlation with human Elo (higher: agrees)")
        ax.set_title(f"question: {q}")
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.4 / fig.get_size_inches()[1], 1, 1))
    return save_figure(fig, out_dir, stem)


def _metric_label(row) -> str:
    return f"{row['metric']} ({'↑' if row['higher_is_better'] else '↓'}, n={row['n_settings']})"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The agreement table with `value [lower, upper]` cells, as the report and the CLI show it."""
    view = pd.DataFrame(
        {
            "question": table["question"],
            "metric": table["metric"],
            "better": np.where(table["higher_is_better"], "higher", "lower"),
            "settings": table["n_settings"],
        }
    )
    for stat in STATISTICS:
        view[stat] = [
            "" if pd.isna(v) else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
            for v, lo, hi in zip(table[stat], table[f"{stat}_lower"], table[f"{stat}_upper"])
        ]
    view["best_share"] = [f"{v:.2f}" if pd.notna(v) else "" for v in table["best_share"]]
    view["sampling_noise"] = table["sampling_noise"]
    return view.sort_values(["question", "kendall_tau"], ascending=[True, False], key=_sort_key, ignore_index=True)


def _sort_key(column: pd.Series):
    if column.name == "kendall_tau":
        return column.map(lambda text: float(text.split()[0]) if text else -2.0)
    return column


def agreement_html(run: AgreementRun, figure_png: Path | None) -> str:
    """The report section: how to read it, the table, the figure, the warnings."""
    table = run.tables()["agreement"]
    level = f"{run.options['level'] * 100:g}%"
    intro = (
        "<p>Each metric's values for the judged settings against the settings' human Elo, per question: "
        "Kendall's τ and Spearman's ρ (1: the metric orders the settings as the raters do; 0: unrelated; "
        "-1: reversed; metrics are oriented so that better is higher), <b>pair_agreement</b>: the share of "
        "setting pairs ordered alike, and <b>best_share</b>: the share of replicates in which the metric "
        f"agrees best. Cells are value [{level} interval]; intervals resample the judgments and each "
        "setting's samples (from its standard error), and cover what the statistic would average over "
        "repeated studies of this size. With few settings rank correlations are coarse: look for metrics "
        "whose intervals do not overlap.</p>"
    )
    view = display_table(table)
    parts = [intro, page.table_html(view, text_columns=tuple(view.columns))]
    if figure_png is not None:
        parts.append(page.figure_html(figure_png, "agreement of each metric with human Elo"))
    warnings = run.warnings()
    if warnings:
        parts.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    return "".join(parts)
