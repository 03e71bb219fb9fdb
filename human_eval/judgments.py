"""Pairwise human judgments: the CSV schema, its reader and its validation.

One judgment per row. Required columns (names are matched case-insensitively, surrounding
spaces ignored):

- ``model_a``, ``model_b``: the two models shown (any text; compared after stripping spaces).
- ``winner``: ``a``, ``b`` or ``tie`` (``--format glide``, the default), or, in the common
  arena layout (``--format arena``), ``model_a``, ``model_b``, ``tie`` or ``tie (bothbad)``.

Optional columns: ``question`` (e.g. ``photorealism``, ``caption``; ratings are fitted per
question), ``prompt_id``, ``rater_id``, ``timestamp``. Any other column is kept as is.

Every row is checked and every bad one is reported with its file line (the header is line 1;
a quoted field spanning lines is reported at its first line): unknown winner labels (never
read as a tie), a model compared with itself, missing or extra fields. Blank lines are
skipped. The file may be UTF-8 (with or without BOM) or UTF-16/32 with a BOM; other
encodings are read with an explicit ``encoding``.
"""
from __future__ import annotations

import codecs
import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

REQUIRED = ("model_a", "model_b", "winner")
OPTIONAL = ("question", "prompt_id", "rater_id", "timestamp")
WINNER_LABELS = {
    "glide": {"a": "a", "b": "b", "tie": "tie"},
    "arena": {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"},
}
FORMATS = tuple(WINNER_LABELS)
DEFAULT_QUESTION = "all"
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class JudgmentError(ValueError):
    """The judgments cannot be used as given; the message names the file and lines."""


@dataclass(frozen=True)
class Issue:
    line: int       # file line, header = 1
    kind: str       # unknown_winner | self_comparison | missing_field | field_count
    message: str


@dataclass
class Judgments:
    """Valid judgments plus what was rejected.

    ``frame`` has one row per valid judgment: ``model_a``, ``model_b``, ``winner`` (``a``,
    ``b`` or ``tie``), ``winner_label`` (the label as written), ``question``
    (``"all"`` without that column), ``line`` (file line) and every other column of the file.
    """
    frame: pd.DataFrame
    issues: list[Issue] = field(default_factory=list)
    source: str = "<data>"
    format: str = "glide"
    rows_read: int = 0

    @property
    def rows_dropped(self) -> int:
        return len({i.line for i in self.issues})

    @property
    def issue_counts(self) -> dict[str, int]:
        return dict(Counter(i.kind for i in self.issues))

    def report(self, limit: int | None = None) -> str:
        """The issues as ``FILE:LINE: message`` lines (all of them unless ``limit``)."""
        shown = self.issues if limit is None else self.issues[:limit]
        lines = [f"{self.source}:{i.line}: {i.message}" for i in shown]
        if len(shown) < len(self.issues):
            lines.append(f"... and {len(self.issues) - len(shown)} more")
        return "\n".join(lines)


def decode(data: bytes, source: str = "<data>", encoding: str | None = None) -> str:
    """Bytes to text: the BOM's encoding if there is one, else ``encoding`` or UTF-8."""
    if encoding is None:
        encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise JudgmentError(f"{source}:{line}: not valid {encoding} text (byte {e.start}); "
                            "pass the file's encoding (e.g. --encoding cp1252)") from None
    except LookupError:
        raise JudgmentError(f"unknown encoding {encoding!r}") from None
    return text.lstrip("\ufeff")


def parse_judgments(data: bytes | str, source: str = "<data>", format: str = "glide",
                    encoding: str | None = None, drop_invalid: bool = False) -> Judgments:
    """Parse and validate judgments from CSV bytes (or text).

    Raises JudgmentError when the header lacks a required column, when the CSV itself is
    malformed, and, unless ``drop_invalid``, when any row is invalid (listing all of them).
    """
    if format not in WINNER_LABELS:
        raise JudgmentError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    text = data if isinstance(data, str) else decode(data, source, encoding)
    labels = WINNER_LABELS[format]
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    header = None
    records, issues, rows_read = [], [], 0
    last_line = 0
    try:
        for fields in reader:
            start, last_line = last_line + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue                                    # blank line
            if header is None:
                header = _header(fields, source, start)
                continue
            rows_read += 1
            record, problems = _row(fields, header, labels, format, start)
            if problems:
                issues.extend(problems)
            else:
                records.append(record)
    except csv.Error as e:
        raise JudgmentError(f"{source}:{reader.line_num}: malformed CSV: {e}") from None
    if header is None:
        raise JudgmentError(f"{source}: empty file (expected a header with {', '.join(REQUIRED)})")
    if issues and not drop_invalid:
        shown = Judgments(pd.DataFrame(), issues, source, format, rows_read)
        raise JudgmentError(f"{source}: {shown.rows_dropped} invalid row(s) of {rows_read} "
                            f"({_counts_text(shown.issue_counts)}):\n{shown.report()}")
    columns = list(header) + ["winner_label", "line"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if "question" not in header:
        frame["question"] = DEFAULT_QUESTION
    frame["line"] = frame["line"].astype("int64")
    return Judgments(frame, issues, source, format, rows_read)


def read_judgments(path: str | os.PathLike, format: str = "glide", encoding: str | None = None,
                   drop_invalid: bool = False) -> Judgments:
    """Read and validate a judgments CSV file (see the module docstring for the schema)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise JudgmentError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_judgments(data, str(path), format, encoding, drop_invalid)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))


def _header(fields: list[str], source: str, line: int) -> list[str]:
    names = [f.strip() or f"unnamed_{k + 1}" for k, f in enumerate(fields)]
    names = [n.lower() if n.lower() in REQUIRED + OPTIONAL else n for n in names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JudgmentError(f"{source}:{line}: duplicate column(s) in the header: {', '.join(duplicates)}")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise JudgmentError(f"{source}:{line}: missing required column(s) {', '.join(missing)} "
                            f"(header has: {', '.join(names)})")
    reserved = [c for c in ("winner_label", "line") if c in names]
    if reserved:
        raise JudgmentError(f"{source}:{line}: column name(s) {', '.join(reserved)} are reserved")
    return names


def _row(fields, header, labels, format, line):
    problems = []
    if len(fields) != len(header):
        problems.append(Issue(line, "field_count", f"{len(fields)} field(s) but the header has {len(header)}"))
        return None, problems
    values = dict(zip(header, (f.strip() for f in fields)))
    for col in REQUIRED + (("question",) if "question" in header else ()):
        if not values[col]:
            problems.append(Issue(line, "missing_field", f"missing {col}"))
    label = values["winner"]
    winner = labels.get(label.lower())
    if label and winner is None:
        hint = ""
        other = "arena" if format == "glide" else "glide"
        if label.lower() in WINNER_LABELS[other]:
            hint = f" (that is a --format {other} label)"
        problems.append(Issue(line, "unknown_winner",
                              f"unknown winner {label!r}; expected one of {', '.join(labels)}{hint}"))
    if values["model_a"] and values["model_a"] == values["model_b"]:
        problems.append(Issue(line, "self_comparison", f"model {values['model_a']!r} compared with itself"))
    if problems:
        return None, problems
    values["winner"] = winner
    return [values[c] for c in header] + [label, line], []
