"""One self-contained HTML page: every image inlined as base64, no scripts or styles fetched.

A small inline script marks images that fail to decode (visible red outline, and
`data-images-loaded` / `data-images-broken` on <body>) so a broken page is obvious.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img.sample { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
img.figure { max-width: 100%; }
img.broken { outline: 3px solid red; }
.caption { max-width: 16em; text-align: left; font-size: 0.85em; }
div.scroll { overflow-x: auto; }
code { background: #f3f3f3; padding: 0 0.2em; }
tr.marked td { font-weight: bold; background: #eef6ee; }
"""

CHECK_IMAGES = """
window.addEventListener("load", function () {
  var ok = 0, bad = 0;
  document.querySelectorAll("img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok++; } else { bad++; img.classList.add("broken"); }
  });
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesBroken = bad;
});
"""


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_data_uri(image_chw: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image_chw, np.uint8).transpose(1, 2, 0))).save(buf, "PNG")
    return png_data_uri(buf.getvalue())


def table_html(df: pd.DataFrame, float_format="{:.4g}", text_columns=(), marked=None) -> str:
    """`marked`: one bool per row; those rows get class "marked" (bold, tinted)."""
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    marks = [False] * len(df) if marked is None else [bool(m) for m in marked]
    for (_, r), mark in zip(df.iterrows(), marks):
        cells = []
        for c in df.columns:
            v = r[c]
            text = (
                ""
                if v is None or (isinstance(v, float) and np.isnan(v))
                else float_format.format(v)
                if isinstance(v, float)
                else str(v)
            )
            cls = "text" if c in text_columns or not isinstance(v, (int, float)) else ""
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>')
        body.append(('<tr class="marked">' if mark else "<tr>") + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def sample_grid_html(previews: dict[str, np.ndarray], captions: list[str], order: list[str]) -> str:
    """Rows: the same captions (and seeds); columns: one per setting, so columns compare."""
    names = [n for n in order if n in previews]
    head = '<th class="text">caption</th>' + "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for i, caption in enumerate(captions):
        cells = [f'<td class="caption">{html.escape(caption)}</td>']
        for n in names:
            img = previews[n][i]
            cells.append(
                f'<td><img class="sample" alt="{html.escape(n)}: {html.escape(caption)}" '
                f'src="{image_data_uri(img)}"></td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_page(title: str, sections: list[tuple[str, str]]) -> str:
    """sections: (heading, inner HTML) in order."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, inner in sections:
        anchor = html.escape(heading.lower().replace(" ", "-"))
        parts.append(f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>{inner}</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}<script>{CHECK_IMAGES}</script></body></html>\n"
    )


def figure_html(png_path: Path, alt: str) -> str:
    return f'<img class="figure" alt="{html.escape(alt)}" src="{png_data_uri(Path(png_path).read_bytes())}">'
