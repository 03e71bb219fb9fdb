"""`glide-eval elo` (human-preference Elo with bootstrap intervals) and `glide-eval elo-plot`
(Figure 7). The judgments CSV schema is described in human_eval.judgments and docs/judgments.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pandas as pd

from glide_eval.cli import echo_json
from glide_eval.cli.options import out_file_option
from human_eval.elo import analyze
from human_eval.figure7 import FigureError, check_guidance_names, draw_figure7, ratings_warnings
from human_eval.fit import FitError
from human_eval.judgments import JudgmentError, check_encoding, exclude_raters, read_judgments
from human_eval.names import NAMING, is_unguided
from human_eval.outputs import format_table, provenance, result_tables, write_results

_FORMAT = click.Choice(["glide", "arena"])


def _check_encoding(ctx, param, value):
    try:
        return None if value is None else check_encoding(value)
    except JudgmentError as e:
        raise click.BadParameter(str(e)) from None


def _check_l2(ctx, param, value):
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


def _judgment_options(f):
    f = click.option(
        "--encoding",
        default=None,
        callback=_check_encoding,
        help="Text encoding of the CSV (default: from its BOM, else UTF-8).",
    )(f)
    f = click.option(
        "--drop-invalid", is_flag=True, help="Report invalid rows and continue without them (default: exit 1)."
    )(f)
    f = click.option(
        "--format",
        "fmt",
        type=_FORMAT,
        default="glide",
        show_default=True,
        help="winner labels: glide = a/b/tie; arena = model_a/model_b/tie/tie (bothbad).",
    )(f)
    f = click.option(
        "--l2",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        callback=_check_l2,
        help="L2 penalty on natural-log strengths (Gaussian prior, sd 1/sqrt(L2)); "
        "makes separable or disconnected data finite.",
    )(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Bootstrap seed.")(f)
    f = click.option(
        "--rounds",
        type=click.IntRange(min=0),
        default=1000,
        show_default=True,
        help="Bootstrap rounds (0: no intervals).",
    )(f)
    f = click.option(
        "--level",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.95,
        show_default=True,
        help="Confidence level of the percentile intervals.",
    )(f)
    f = click.option("--question", default=None, help="Fit only this question (default: each separately).")(f)
    return f


def _load(path, fmt, encoding, drop_invalid):
    try:
        judgments = read_judgments(path, fmt, encoding, drop_invalid)
    except JudgmentError as e:
        raise click.ClickException(str(e)) from None
    if judgments.issues:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(judgments.issue_counts.items()))
        click.echo(f"dropped {judgments.rows_dropped} invalid row(s) of {judgments.rows_read} ({counts}):", err=True)
        click.echo(judgments.report(limit=20), err=True)
    return judgments


def _fit(judgments, question, anchor, rounds, seed, l2, level):
    try:
        return analyze(judgments, question, anchor, rounds, seed, l2, level, progress=True)
    except FitError as e:
        raise click.ClickException(str(e)) from None


def _records(table):
    return json.loads(table.to_json(orient="records"))


@click.command("elo")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False))
@_judgment_options
@click.option("--anchor", default=None, help="Report ratings relative to this model (e.g. unguided).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: FILE_elo next to the input)."
)
@click.option(
    "--exclude-raters",
    "exclude_raters_",
    default=None,
    help="Comma-separated rater_id values whose judgments are left out (e.g. those `glide-eval judge` flagged); "
    "recorded in provenance.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def elo_command(
    csv_path, question, level, rounds, seed, l2, fmt, drop_invalid, encoding, anchor, out_dir, exclude_raters_, as_json
):
    """Fit human-preference Elo ratings (GLIDE appendix A.1) from pairwise judgments in FILE.csv,
    with bootstrap intervals, ranks and win rates, per question."""
    judgments = _load(csv_path, fmt, encoding, drop_invalid)
    excluded = sorted({r.strip() for r in (exclude_raters_ or "").split(",") if r.strip()})
    try:
        judgments, dropped = exclude_raters(judgments, excluded)
    except JudgmentError as e:
        raise click.ClickException(str(e)) from None
    absent = [r for r, n in dropped.items() if n == 0]
    if absent:
        click.echo(f"warning: --exclude-raters: no judgments by {', '.join(absent)}", err=True)
    results = _fit(judgments, question, anchor, rounds, seed, l2, level)
    options = {
        "question": question,
        "anchor": anchor,
        "rounds": rounds,
        "seed": seed,
        "l2": l2,
        "level": level,
        "format": fmt,
        "encoding": encoding,
        "drop_invalid": drop_invalid,
        "exclude_raters": excluded,
        "excluded_rows": dropped,
    }
    out = Path(out_dir) if out_dir else Path(csv_path).with_name(Path(csv_path).stem + "_elo")
    paths = write_results(results, out, provenance(csv_path, judgments, options, results))
    if as_json:
        echo_json(
            {
                "questions": [
                    {**r.summary(), "ratings": _records(r.ratings_table()), "pairs": _records(r.pairs_table())}
                    for r in results
                ],
                "rows": {"read": judgments.rows_read, "used": len(judgments.frame), "dropped": judgments.rows_dropped},
                "files": {k: str(v) for k, v in paths.items()},
            }
        )
        return
    for r in results:
        click.echo(format_table(r) + "\n")
    click.echo(f"wrote {out}/ (ratings, pairs, winrate_matrix as .csv and .parquet; provenance.json)")


def _read_ratings(path: Path):
    if path.is_dir():
        path = path / "ratings.parquet" if (path / "ratings.parquet").exists() else path / "ratings.csv"
        if not path.exists():
            raise click.ClickException(f"{path.parent}: no ratings.parquet or ratings.csv (an `elo --out` folder?)")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        try:
            header = set(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
        except ValueError:
            return None  # not a ratings table: read it as judgments (precise errors)
        if {"model", "rating"} <= header:
            return pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{path}: cannot read ratings: {e}") from None
    return None


@click.command("elo-plot")
@click.argument("source", metavar="FILE.csv|RATINGS", type=click.Path(exists=True))
@out_file_option("Figure path (.png); a .pdf is written beside it.")
@_judgment_options
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
def elo_plot_command(source, out_path, question, level, rounds, seed, l2, fmt, drop_invalid, encoding, as_json):
    """Draw GLIDE Figure 7: Elo against guidance scale per guidance family (model names
    FAMILY:SCALE, e.g. cfg:3.0, clip:2.0, or a sweep's setting names cfg-1.5, clip-2), relative
    to the model named `unguided`.

    SOURCE is a judgments CSV (fitted here, anchored at unguided) or the ratings of
    `glide-eval elo --anchor unguided` (ratings.csv / ratings.parquet or its folder)."""
    ratings = _read_ratings(Path(source))
    if ratings is None:
        judgments = _load(source, fmt, encoding, drop_invalid)
        names = set(judgments.frame["model_a"]) | set(judgments.frame["model_b"])
        try:
            check_guidance_names(names)  # before the fit: the names alone decide it
        except FigureError as e:
            raise click.ClickException(f"{source}: {e}") from None
        unguided = sorted(n for n in names if is_unguided(n))
        if not unguided:
            raise click.ClickException(f"{source}: no model named 'unguided' to draw Figure 7 relative to")
        results = _fit(judgments, question, unguided[0], rounds, seed, l2, level)
        ratings = result_tables(results)["ratings"]
        warnings = [f"question {r.question}: {w}" for r in results for w in r.warnings]
    else:
        if question is not None:
            ratings = ratings[ratings["question"] == question.strip()]
        warnings = ratings_warnings(ratings)
    try:
        paths, skipped = draw_figure7(ratings, out_path)
    except FigureError as e:
        raise click.ClickException(f"{source}: {e}") from None
    if as_json:
        echo_json({"files": [str(p) for p in paths], "skipped_models": skipped, "warnings": warnings})
        return
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if skipped:
        click.echo(f"not guidance settings, left out: {', '.join(skipped)} ({NAMING})", err=True)
    for p in paths:
        click.echo(f"wrote {p}")
