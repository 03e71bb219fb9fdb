"""FID against the number of sampling steps, one line per (sampler, time grid) (the `steps` settings).

Each `steps` row of a sweep samples the base model with its own method and respacing at
one guidance setting (`[grid] steps`, `steps_methods`, `steps_guidance`). The respacing's
grid (`samplers.schedules.grid_kind`: GLIDE's uniform "N", "ddimN", and the solver grids
"logsnrN", "karrasN", "quadN") makes its own line: same colour per sampler, a line style per grid.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from metrics.names import HIGHER_IS_BETTER
from reports.figure6 import interval, save_figure
from samplers.schedules import count_steps, grid_kind

METHOD_STYLE = {
    "ancestral": {"color": "tab:blue", "marker": "o"},
    "ddim": {"color": "tab:green", "marker": "s"},
    "dpmpp_2m": {"color": "tab:red", "marker": "D"},
    "unipc": {"color": "tab:purple", "marker": "v"},
    "plms": {"color": "tab:orange", "marker": "P"},
}


def steps_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The `steps` family's rows that have an FID, with their number of base steps."""
    if not {"family", "method", "base_respacing", "fid"} <= set(df.columns):
        return df.iloc[0:0]
    part = df[df["family"] == "steps"]
    return part.assign(steps=[count_steps(r) for r in part["base_respacing"]]).dropna(subset=["fid"])


# A line style per time grid (GLIDE's uniform "N" solid).
GRID_LINESTYLE = {"ddim": "--", "logsnr": "-.", "karras": ":", "quad": (0, (5, 1, 1, 1, 1, 1))}


def respacing_grid(respacing: str) -> str:
    """The grid a steps row's respacing is on: "uniform" for GLIDE's "N" (and "fast27", ""), else its kind."""
    kind = grid_kind(respacing)
    return kind if kind in GRID_LINESTYLE else "uniform"


def line_label(method: str, respacing: str) -> str:
    """One line per sampler and time grid: "unipc" (GLIDE's uniform "N"), "unipc (ddimN)", "unipc (logsnrN)"."""
    grid = respacing_grid(respacing)
    return method if grid == "uniform" else f"{method} ({grid}N)"


def with_lines(part: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """`part` with its line label (`_line`), less a line that holds only the reference setting
    (a reference on a grid no other steps row uses: drawn as the reference band, not as a line)."""
    part = part.assign(_line=[line_label(m, r) for m, r in zip(part["method"], part["base_respacing"])])
    return part[part["_line"].isin(part.loc[part["setting"] != reference, "_line"])]


def steps_title(part: pd.DataFrame) -> str:
    """The figure's title, naming the guidance the steps rows were sampled with (scale 0: unguided)
    and their number of samples (FID's bias depends on it: compare rows of one count only)."""
    guidance = ", ".join("unguided" if s == 0 else f"classifier-free scale {s:g}" for s in sorted(set(part["scale"])))
    counts = (
        ", ".join(f"{n:,}" for n in sorted({int(n) for n in part["n_samples"].dropna()})) if "n_samples" in part else ""
    )
    return f"FID vs number of sampling steps ({guidance}{f', {counts} samples' if counts else ''})"


def plot_steps(df: pd.DataFrame, out_dir: Path, stem: str = "steps", reference: str | None = None) -> list[Path]:
    """Write STEM.png and STEM.pdf atomically; returns their paths (none without steps rows).
    `reference`: the setting the steps settings were compared with, drawn as a dashed line with its
    FID interval as a band."""
    part = steps_rows(df)
    if part.empty:
        return []
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    ref = df[df["setting"] == reference] if reference is not None else df.iloc[0:0]
    if not ref.empty and pd.notna(ref["fid"].iloc[0]):
        r = ref.iloc[0]
        ax.axhline(r["fid"], color="grey", linestyle="--", linewidth=1, label=f"reference: {reference}")
        if pd.notna(r.get("fid_ci_low")) and pd.notna(r.get("fid_ci_high")):
            ax.axhspan(r["fid_ci_low"], r["fid_ci_high"], color="grey", alpha=0.15)
    part = with_lines(part, reference)
    for label, rows in part.groupby("_line", sort=True):
        rows = rows.sort_values("steps")
        method = rows["method"].iloc[0]
        style = METHOD_STYLE.get(method, {"color": None, "marker": "^"})
        linestyle = GRID_LINESTYLE.get(respacing_grid(rows["base_respacing"].iloc[0]), "-")  # same colour per sampler
        ax.plot(rows["steps"], rows["fid"], label=label, linestyle=linestyle, markersize=7, **style)
        yerr = interval(rows, "fid")  # fid_ci_low / fid_ci_high, when the sweep computed intervals
        if yerr is not None:
            ax.errorbar(rows["steps"], rows["fid"], yerr=yerr, fmt="none", ecolor=style["color"], alpha=0.5, capsize=2)
    ax.set_xscale("log")
    ticks = sorted(set(part["steps"]))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps (base model)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(steps_title(part), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8 if part["_line"].nunique() > 6 else None)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


VERDICT_COLUMNS = [
    "method",
    "grid",
    "reference",
    "fewest_steps",
    "setting",
    "difference",
    "ci_low",
    "ci_high",
    "steps_tried",
]


def steps_verdicts(results: pd.DataFrame, differences: pd.DataFrame, metric: str = "fid") -> pd.DataFrame:
    """Per sampler and time grid (`line_label`; the grid in its own column) of the `steps` rows: the fewest steps whose
    `metric` is not distinguishably worse than the reference setting's, by the paired interval of
    (setting - reference) in `differences` (kind "steps-reference", `reports.intervals.DIFFERENCE_COLUMNS`):
    for FID, ci_low <= 0. A row sampled like the reference (samples_from) counts as equal. fewest_steps
    is None (NaN) when no setting of that sampler qualifies; samplers without any compared row, and
    a line holding only the reference (`with_lines`), are left out."""
    part = steps_rows(results) if metric == "fid" else results[results["family"] == "steps"]
    diffs = differences[(differences["kind"] == "steps-reference") & (differences["metric"] == metric)]
    if part.empty or diffs.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    reference = diffs["setting_a"].iloc[0]
    higher = HIGHER_IS_BETTER[metric]
    out = []
    part = with_lines(part, reference)
    for method, rows in part.groupby("_line", sort=True):  # a sampler's grids apart
        candidates = []
        for _, r in rows.sort_values("steps").iterrows():
            if reference in (r["setting"], r.get("samples_from")):
                candidates.append((r, 0.0, 0.0, 0.0))
                continue
            d = diffs[diffs["setting_b"] == r["setting"]]
            if not d.empty:
                candidates.append((r, *d[["difference", "ci_low", "ci_high"]].iloc[0]))
        if not candidates:
            continue
        ok = [c for c in candidates if (c[3] >= 0 if higher else c[2] <= 0)]
        best = ok[0] if ok else None
        out.append(
            {
                "method": method,
                "grid": respacing_grid(rows["base_respacing"].iloc[0]),
                "reference": reference,
                "fewest_steps": int(best[0]["steps"]) if best else None,
                "setting": best[0]["setting"] if best else "",
                "difference": float(best[1]) if best else float("nan"),
                "ci_low": float(best[2]) if best else float("nan"),
                "ci_high": float(best[3]) if best else float("nan"),
                "steps_tried": ", ".join(str(int(c[0]["steps"])) for c in candidates),
            }
        )
    return pd.DataFrame(out, columns=VERDICT_COLUMNS)
