"""Table 2 of the GLIDE paper (FID on MS-COCO 256x256), with this run's rows beside it.

The published rows are from Nichol et al. (2022), Table 2: models trained on MS-COCO
report FID; models not trained on it report zero-shot FID (30k captions against the
whole validation set; GLIDE with classifier-free guidance scale 1.5).
"""

from __future__ import annotations

import math

import pandas as pd

from metrics.extractors import INCEPTION_SHA256_PREFIX
from metrics.names import BEYOND_INCEPTION
from reports.intervals import format_interval

# (model, FID, zero-shot, how the paper prints it)
PAPER_ROWS = [
    ("AttnGAN", 35.49, False, "35.49"),
    ("DM-GAN", 32.64, False, "32.64"),
    ("DF-GAN", 21.42, False, "21.42"),
    ("DM-GAN + CL", 20.79, False, "20.79"),
    ("XMC-GAN", 9.33, False, "9.33"),
    ("LAFITE", 8.12, False, "8.12"),
    ("DALL-E", 28.0, True, "~28"),
    ("LAFITE", 26.94, True, "26.94"),
    ("GLIDE", 12.24, True, "12.24"),
    ("GLIDE (Validation filtered)", 12.89, True, "12.89"),
]

# the paper's protocol for its GLIDE rows: 30k captions, classifier-free guidance 1.5,
# ancestral sampling with 250 base steps, the fast27 upsampler at temperature 0.997 (the
# reference code's), FID against the whole MS-COCO 2014 validation set (40,504 images)
PROTOCOL = {
    "resolution": 256,
    "family": "cfg",
    "scale": 1.5,
    "n_samples": 30000,
    "method": "ancestral",
    "base_respacing": "250",
    "upsample_respacing": "fast27",
    "upsample_temperature": 0.997,
    "n_ref": 40504,
    "captions_source": "coco",
}
# keys with more than one value in the protocol: the reference code runs float32 on a CPU and
# float16 on a GPU
PROTOCOL_CHOICES = {"dtype": ("float32", "float16")}
# the evaluator and the reference images, by content: torch-fidelity's Inception file (its name
# carries its sha256's first 8 hex digits; the paper's FIDs are computed with these weights) and
# the reference images' fingerprint (`reference_images_sha256`: the sha256 of the manifest of the
# images' names, sizes and sha256s, glide_eval.data.coco). The fingerprint of the official
# val2014 folder is not known to this project (no copy of MS-COCO here): while it is None, a row
# must record a fingerprint (results of older versions do not), and any recorded one is accepted;
# set it from a run on the official files to compare it too.
PROTOCOL_INCEPTION_SHA256_PREFIX = INCEPTION_SHA256_PREFIX
PROTOCOL_REFERENCE_IMAGES_SHA256: str | None = None


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _matches(have, want) -> bool:
    if isinstance(want, (int, float)):
        number = _number(have)
        return number is not None and math.isclose(number, float(want))
    return have is not None and str(have) == str(want)


def _shown(value) -> str:
    """A value in a gap's text: integral numbers without ".0", an empty string as "none"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not recorded"
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return str(int(number)) if number.is_integer() else f"{number:g}"
    return str(value) if str(value) else "none"


def _short(digest) -> str:
    return f"{digest[:8]}..." if isinstance(digest, str) and digest else "not recorded"


def protocol_gaps(row) -> list[str]:
    """How a result row departs from the Table 2 protocol, one text each ("n_ref 40 (protocol
    40504)"; empty list: it follows it); a value the row does not record (results of older
    versions) counts as a departure."""
    gaps = [
        f"{key} {_shown(row.get(key))} (protocol {_shown(want)})"
        for key, want in PROTOCOL.items()
        if not _matches(row.get(key), want)
    ]
    gaps += [
        f"{key} {_shown(row.get(key))} (protocol {' or '.join(allowed)})"
        for key, allowed in PROTOCOL_CHOICES.items()
        if row.get(key) not in allowed
    ]
    inception = row.get("sha256_inception")
    if not (isinstance(inception, str) and inception.startswith(PROTOCOL_INCEPTION_SHA256_PREFIX)):
        gaps.append(
            f"Inception sha256 {_short(inception)} (protocol {PROTOCOL_INCEPTION_SHA256_PREFIX}..., torch-fidelity's)"
        )
    images = row.get("reference_images_sha256")
    if not isinstance(images, str) or not images:
        gaps.append("reference images' fingerprint not recorded")
    elif PROTOCOL_REFERENCE_IMAGES_SHA256 and images != PROTOCOL_REFERENCE_IMAGES_SHA256:
        gaps.append(f"reference images {_short(images)} (protocol {_short(PROTOCOL_REFERENCE_IMAGES_SHA256)})")
    return gaps


def optional_columns(results: pd.DataFrame) -> list[str]:
    """The metrics beyond Inception this run has (fd_dinov2, fd_clip, cmmd, density, coverage):
    Table 2's optional columns, blank in the paper's rows (the paper reports FID only)."""
    return [m for m in BEYOND_INCEPTION if m in results.columns and results[m].notna().any()]


def table2(results: pd.DataFrame, style: str = "pm") -> pd.DataFrame:
    """Paper rows, then one row per setting of this run that has an FID; with fid_ci_low /
    fid_ci_high columns its display is "12.24 ± 0.08" (style "pm") or "12.24 [12.16, 12.32]".
    Optional columns (`optional_columns`): "<metric>_display" of this run's rows, "" in the paper's."""
    extra = optional_columns(results)
    rows = [
        {
            "model": m,
            "fid": v if not zs else None,
            "zero_shot_fid": v if zs else None,
            "display": d,
            "zero_shot": zs,
            "source": "GLIDE paper",
            "protocol": "",
            **{f"{x}_display": "" for x in extra},
        }
        for m, v, zs, d in PAPER_ROWS
    ]
    if "fid" in results.columns:
        for _, r in results.iterrows():
            gaps = protocol_gaps(r)
            on_coco = r.get("captions_source") == "coco"
            value = float(r["fid"])
            rows.append(
                {
                    "model": f"Ours: {r['setting']}",
                    "fid": None if on_coco else value,
                    "zero_shot_fid": value if on_coco else None,
                    "display": format_interval(value, r.get("fid_ci_low"), r.get("fid_ci_high"), style),
                    "zero_shot": bool(on_coco),
                    "source": "this run",
                    "protocol": "Table 2 protocol" if not gaps else "differs: " + ", ".join(gaps),
                    **{
                        f"{x}_display": format_interval(float(r[x]), r.get(f"{x}_ci_low"), r.get(f"{x}_ci_high"), style)
                        if _number(r.get(x)) is not None
                        else ""
                        for x in extra
                    },
                }
            )
    return pd.DataFrame(rows)


def _cells(r) -> tuple[str, str]:
    fid = r["display"] if not r["zero_shot"] else ""
    zs = r["display"] if r["zero_shot"] else ""
    return fid, zs


def _extra(table: pd.DataFrame) -> list[str]:
    return [c[: -len("_display")] for c in table.columns if c.endswith("_display") and c != "display"]


def to_markdown(table: pd.DataFrame) -> str:
    extra = _extra(table)
    head = "".join(f" {m} |" for m in extra)
    lines = [
        f"| Model | FID | Zero-shot FID |{head} Source | Protocol |",
        "| --- | ---: | ---: |" + " ---: |" * len(extra) + " --- | --- |",
    ]
    for _, r in table.iterrows():
        fid, zs = _cells(r)
        cells = "".join(f" {r[f'{m}_display']} |" for m in extra)
        lines.append(f"| {r['model']} | {fid} | {zs} |{cells} {r['source']} | {r['protocol']} |")
    lines.append("")
    lines.append(
        "Zero-shot: not trained on MS-COCO. Our rows are zero-shot only when measured on "
        "MS-COCO captions; rows that differ from the paper's protocol (256x256, "
        "classifier-free guidance 1.5, 30k captions, ancestral sampling with 250 base steps, "
        "fast27 upsampler at temperature 0.997, float32 or float16, torch-fidelity's Inception "
        "weights, the whole 2014 validation set as reference) say how."
    )
    return "\n".join(lines) + "\n"


TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "~": r"$\sim$",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "^": r"\^{}",
}


def _tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(c, c) for c in str(text))


def _pm(cell: str) -> str:
    return _tex(cell).replace("±", r"$\pm$")


def to_latex(table: pd.DataFrame) -> str:
    extra = _extra(table)
    head = "".join(f" & {_tex(m)}" for m in extra)
    lines = [
        r"\begin{tabular}{lrr" + "r" * len(extra) + "l}",
        r"\toprule",
        rf"Model & FID & Zero-shot FID{head} & Source \\",
        r"\midrule",
    ]
    previous = None
    for _, r in table.iterrows():
        if previous is not None and r["source"] != previous:
            lines.append(r"\midrule")
        previous = r["source"]
        fid, zs = _cells(r)
        source = r["source"] if not r["protocol"] else f"{r['source']} ({r['protocol']})"
        cells = "".join(f" & {_pm(r[f'{m}_display'])}" for m in extra)
        lines.append(f"{_tex(r['model'])} & {_pm(fid)} & {_pm(zs)}{cells} & {_tex(source)} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
