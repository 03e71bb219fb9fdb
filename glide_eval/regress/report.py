"""The regression test's report: regress.json and regress.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glide_eval.regress.images import images_markdown
from storage import atomic_write_text, write_json

BOOTSTRAP = "paired bootstrap SE"


def _fmt(x) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.6g}"


def markdown(report: dict) -> str:
    lines = [
        "# Checkpoint regression test",
        "",
        f"- baseline run: `{report['baseline']}`",
        f"- candidate checkpoints: `{report['candidate']}`",
        f"- samples per setting: {report['n']} (first sample ids of the baseline; requested "
        f"{report['n_requested']})" + "".join(f"; {k}: {v}" for k, v in report.get("n_fewer", {}).items()),
        f"- intervals: {report.get('interval_method') or 'paired bootstrap SE'}"
        + (f" ({report['bootstrap_rounds']} rounds)" if report.get("interval_method", BOOTSTRAP) == BOOTSTRAP else "")
        + ", difference ± "
        f"{report['z']:.3f}·SE ({report['level']:.0%} family-wise over {report['comparisons']} comparisons)",
        f"- result: **{'REGRESSION' if report['regressions'] else 'no regression'}**"
        + (f" ({', '.join(report['regressions'])})" if report["regressions"] else ""),
        *(
            [
                f"- possible regressions (worse beyond tolerance, but within sampling noise): "
                f"{', '.join(report['possible_regressions'])}"
            ]
            if report["possible_regressions"]
            else []
        ),
        "",
        "| setting | metric | better | baseline | candidate | difference [interval] | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        interval = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if "ci_low" in r else ""
        verdict_text = f"**{r['verdict']}**" if r["verdict"] == "regression" else r["verdict"]
        lines.append(
            f"| {r['setting']} | {r['metric']} | {'higher' if r['higher_is_better'] else 'lower'} | "
            f"{_fmt(r['baseline'])} | {_fmt(r['candidate'])} | {_fmt(r['difference'])}{interval} | "
            f"{_fmt(r['tolerance'])} | {verdict_text} |"
        )
    if "images" in report:
        lines += ["", *images_markdown(report["images"])]
    p = report["provenance"]
    lines += ["", "## Provenance", "", "| file | baseline sha256 | candidate sha256 |", "|---|---|---|"]
    for label in sorted(set(p["baseline_files"]) | set(p["candidate_files"])):
        lines.append(
            f"| {label} | `{p['baseline_files'].get(label, '-')}` | `{p['candidate_files'].get(label, '-')}` |"
        )
    lines += [
        "",
        f"- config hash: baseline `{p['baseline_config_hash']}`, candidate `{p['candidate_config_hash']}`",
        f"- versions: {', '.join(f'{k} {v}' for k, v in sorted(p['versions'].items()))}",
        f"- finished at {p['finished_at']}",
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict) -> None:
    write_json(out_dir / "regress.json", report)
    atomic_write_text(out_dir / "regress.md", markdown(report))
