"""Writing Elo results: CSV + parquet tables and a provenance record, each file atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import pandas as pd

from human_eval.elo import EloResult
from human_eval.judgments import cut
from storage import atomic_write_text, atomic_write_with, package_versions, sha256_file

TABLES = ("ratings", "pairs", "winrate_matrix")


# the packages whose versions an Elo record names
ELO_PACKAGES = ("glide-eval", "numpy", "scipy", "pandas", "pyarrow", "matplotlib")


def result_tables(results: list[EloResult]) -> dict[str, pd.DataFrame]:
    return {
        "ratings": pd.concat([r.ratings_table() for r in results], ignore_index=True),
        "pairs": pd.concat([r.pairs_table() for r in results], ignore_index=True),
        "winrate_matrix": pd.concat([r.winrate_matrix() for r in results], ignore_index=True),
    }


def write_results(results: list[EloResult], out_dir: str | os.PathLike, provenance: dict) -> dict[str, Path]:
    """ratings / pairs / winrate_matrix as .csv and .parquet plus provenance.json in ``out_dir``."""
    out = Path(out_dir)
    paths = {}
    for name, table in result_tables(results).items():
        for ext, write in (
            ("csv", lambda t, p: t.to_csv(p, index=False)),
            ("parquet", lambda t, p: t.to_parquet(p, index=False)),
        ):
            path = out / f"{name}.{ext}"
            atomic_write_with(path, lambda tmp, t=table, w=write: w(t, tmp))
            paths[f"{name}_{ext}"] = path
    path = out / "provenance.json"
    text = json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text)
    paths["provenance"] = path
    return paths


def provenance(input_path, judgments, options: dict, results: list[EloResult]) -> dict:
    """How the results were made: input hash, rows used and dropped, options, versions."""
    return {
        "command": "glide-eval elo",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "input": {
            "path": str(Path(input_path).resolve()),
            "sha256": sha256_file(input_path),
            "format": judgments.format,
        },
        "rows": {
            "read": judgments.rows_read,
            "used": int(len(judgments.frame)),
            "dropped": judgments.rows_dropped,
            "problems_by_kind": judgments.issue_counts,
            "dropped_lines": sorted({i.line for i in judgments.issues}),
        },
        "options": options,
        "questions": [r.summary() for r in results],
        "estimator": "Bradley-Terry maximum likelihood on the Elo scale (GLIDE appendix A.1), ties = half a "
        "win to both; multinomial bootstrap over judgments, percentile intervals",
        "versions": package_versions(ELO_PACKAGES),
    }


def format_table(result: EloResult) -> str:
    """The ratings of one question as aligned text."""
    table = result.ratings_table()
    table["model"] = table["model"].map(cut)  # the files keep whole names; the screen gets 80 chars
    pct = f"{result.level * 100:g}%"
    head = f"question: {cut(result.question)}  ({result.pairs.n_judgments} judgments, {len(result.models)} models"
    head += f", ratings relative to {cut(result.anchor)})" if result.anchor else ", ratings sum to 0)"
    width = max(5, *(len(m) for m in table["model"]))
    lines = [head, f"{'rank':>4} {'[' + pct + ']':>9}  {'model':<{width}} {'elo':>8} {pct + ' interval':>20} {'n':>7}"]
    for row in table.itertuples():
        rank_ci = f"[{row.rank_lower}, {row.rank_upper}]" if pd.notna(row.rank_lower) else ""
        ci = f"[{row.lower:8.1f}, {row.upper:8.1f}]" if pd.notna(row.lower) else ""
        lines.append(
            f"{row.rank:>4} {rank_ci:>9}  {row.model:<{width}} {row.rating:8.1f} {ci:>20} {row.n_judgments:>7}"
        )
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)
