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
read as a tie), a model compared with itself, missing or extra fields, a control character
(NUL, newline, tab, ... any Unicode ``Cc``, ``Zl`` or ``Zp`` character) inside a model name or
question, a field longer than ``MAX_FIELD`` (131,072) characters. Blank lines are skipped.
Labels echoed in messages are cut to ``LABEL_LIMIT`` (80) characters with an ellipsis.

Lines are counted as a text editor does: a line ends at ``\n`` (with any ``\r`` before it, so
the ``\r\r\n`` endings that Python's csv writer makes on Windows without ``newline=''`` count
once) or at a lone ``\r``. A quote left open runs to the end of the file: that is a fatal error
reported at the line where the quote opens.

The file may be UTF-8 (with or without BOM) or UTF-16/32 with a BOM; other encodings are read
with an explicit ``encoding`` (a character set of files: ``punycode``, ``idna``, the
``*unicode_escape`` codecs and bytes-to-bytes codecs such as ``hex`` are refused).
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import unicodedata
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
MAX_FIELD = 131_072  # Python csv's default field limit: longer fields make a bad row
LABEL_LIMIT = 80
NOT_FILE_ENCODINGS = ("punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined")
_LINE = re.compile(r"[^\r\n]*(?:\r*\n|\r|$)")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class JudgmentError(ValueError):
    """The judgments cannot be used as given; the message names the file and lines."""


@dataclass(frozen=True)
class Issue:
    line: int  # file line, header = 1
    kind: str  # unknown_winner | self_comparison | missing_field | field_count | control_character
    #                 | field_too_long
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


def cut(label: str, limit: int = LABEL_LIMIT) -> str:
    """``label`` cut to ``limit`` characters, the last one an ellipsis (for messages)."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def short(label: str, limit: int = LABEL_LIMIT) -> str:
    """``repr`` of ``label``, cut to ``limit`` characters with an ellipsis (for messages)."""
    return repr(label) if len(label) <= limit else repr(label[: limit - 1]) + "\u2026"


def check_encoding(encoding: str) -> str:
    """The codec name of ``encoding`` if it is a character set a CSV file can be written in;
    JudgmentError otherwise (unknown, bytes-to-bytes, or a transfer encoding such as punycode)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise JudgmentError(f"unknown encoding {short(encoding)}") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_FILE_ENCODINGS:
        raise JudgmentError(
            f"{short(encoding)} is not a character encoding of text files (use e.g. utf-8, cp1252, latin-1, utf-16)"
        )
    return info.name


def decode(data: bytes, source: str = "<data>", encoding: str | None = None) -> str:
    """Bytes to text: the BOM's encoding if there is one, else ``encoding`` or UTF-8."""
    if encoding is None:
        encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    encoding = check_encoding(encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise JudgmentError(
            f"{source}:{line}: not valid {encoding} text (byte {e.start}); "
            "pass the file's encoding (e.g. --encoding cp1252)"
        ) from None
    except UnicodeError as e:
        raise JudgmentError(f"{source}: not valid {encoding} text ({e}); pass the file's encoding") from None
    return text.lstrip("\ufeff")


def split_lines(text: str) -> list[str]:
    """The file's lines with their endings, each ending written as ``\n`` (see the module docstring)."""
    lines = [m.group() for m in _LINE.finditer(text)]
    if lines and not lines[-1]:
        lines.pop()  # the empty match at the end
    return [line.rstrip("\r\n") + "\n" if line.endswith(("\r", "\n")) else line for line in lines]


def open_quote_line(lines: list[str], start: int, end: int | None = None) -> int:
    """The 1-based line where the quote opens that carries the record starting at line ``start``
    across its last line break before line ``end`` (or that is still open at ``end``)."""
    in_quote, opened, carried, at_field_start = False, start, start, True
    for number, line in enumerate(lines[start - 1 : end], start):
        k = 0
        while k < len(line):
            char = line[k]
            if in_quote:
                if char == '"':
                    if line[k + 1 : k + 2] == '"':
                        k += 1
                    else:
                        in_quote = False
            elif char == '"' and at_field_start:
                in_quote, opened = True, number
            if in_quote and char == "\n":
                carried = opened
            at_field_start = not in_quote and char in ",\n"
            k += 1
    return opened if in_quote else carried


def parse_judgments(
    data: bytes | str,
    source: str = "<data>",
    format: str = "glide",
    encoding: str | None = None,
    drop_invalid: bool = False,
) -> Judgments:
    """Parse and validate judgments from CSV bytes (or text).

    Raises JudgmentError when the header lacks a required column, when the CSV itself is
    malformed, and, unless ``drop_invalid``, when any row is invalid (listing all of them).
    """
    if format not in WINNER_LABELS:
        raise JudgmentError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    text = data if isinstance(data, str) else decode(data, source, encoding)
    labels = WINNER_LABELS[format]
    header = None
    records, issues, rows_read = [], [], 0
    for start, fields in _records(split_lines(text.lstrip("\ufeff")), source):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if header is None:
            header = _header(fields, source, start)
            continue
        rows_read += 1
        record, problems = _row(fields, header, labels, format, start)
        if problems:
            issues.extend(problems)
        else:
            records.append(record)
    if header is None:
        raise JudgmentError(f"{source}: empty file (expected a header with {', '.join(REQUIRED)})")
    if issues and not drop_invalid:
        shown = Judgments(pd.DataFrame(), issues, source, format, rows_read)
        raise JudgmentError(
            f"{source}: {shown.rows_dropped} invalid row(s) of {rows_read} "
            f"({_counts_text(shown.issue_counts)}):\n{shown.report()}\n"
            "Fix these rows, or pass --drop-invalid to leave them out (they are listed again)."
        )
    columns = list(header) + ["winner_label", "line"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if "question" not in header:
        frame["question"] = DEFAULT_QUESTION
    frame["line"] = frame["line"].astype("int64")
    return Judgments(frame, issues, source, format, rows_read)


def read_judgments(
    path: str | os.PathLike, format: str = "glide", encoding: str | None = None, drop_invalid: bool = False
) -> Judgments:
    """Read and validate a judgments CSV file (see the module docstring for the schema)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise JudgmentError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_judgments(data, str(path), format, encoding, drop_invalid)


def _records(lines: list[str], source: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of every CSV record; a malformed record is a fatal JudgmentError.
    Fields up to the whole text's length are read (longer than MAX_FIELD: a bad row, see `_row`)."""
    reader = csv.reader(lines, strict=True)
    records, last_line = [], 0
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, sum(map(len, lines)) + 1))
    try:
        for fields in reader:
            records.append((last_line + 1, fields))
            last_line = reader.line_num
        return records
    except csv.Error as e:
        start, end = last_line + 1, reader.line_num
        if end >= len(lines) and "unexpected end of data" in str(e):
            line = open_quote_line(lines, start)
            raise JudgmentError(
                f"{source}:{line}: malformed CSV: a quote opened on this line is never closed "
                "(the rest of the file would be one field)"
            ) from None
        if end > start:  # a quoted field ran over line breaks into the error
            line = open_quote_line(lines, start, end)
            raise JudgmentError(
                f"{source}:{line}: malformed CSV: a quote opened on this line runs on to line "
                f"{end}, where: {e} (is its closing quote missing?)"
            ) from None
        raise JudgmentError(f"{source}:{end}: malformed CSV: {e}") from None
    finally:
        csv.field_size_limit(limit)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))


def _header(fields: list[str], source: str, line: int) -> list[str]:
    names = [f.strip() or f"unnamed_{k + 1}" for k, f in enumerate(fields)]
    names = [n.lower() if n.lower() in REQUIRED + OPTIONAL else n for n in names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JudgmentError(f"{source}:{line}: duplicate column(s) in the header: {', '.join(map(short, duplicates))}")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise JudgmentError(
            f"{source}:{line}: missing required column(s) {', '.join(missing)} "
            f"(header has: {', '.join(map(short, names))})"
        )
    reserved = [c for c in ("winner_label", "line") if c in names]
    if reserved:
        raise JudgmentError(f"{source}:{line}: column name(s) {', '.join(reserved)} are reserved")
    return names


def _control_character(value: str) -> str | None:
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(char):04X} at character {position + 1}"
    return None


def _row(fields, header, labels, format, line):
    problems = []
    if len(fields) != len(header):
        problems.append(Issue(line, "field_count", f"{len(fields)} field(s) but the header has {len(header)}"))
        return None, problems
    long = [(name, len(f)) for name, f in zip(header, fields) if len(f) > MAX_FIELD]
    if long:
        return None, [
            Issue(line, "field_too_long", f"{name} has {n:,} characters (at most {MAX_FIELD:,})") for name, n in long
        ]
    values = dict(zip(header, (f.strip() for f in fields)))
    raw = dict(zip(header, (f.strip(" ") for f in fields)))  # strip() alone would hide \t, \x1f, \u2029
    for col in ("model_a", "model_b") + (("question",) if "question" in header else ()):
        where = _control_character(raw[col])
        if where:
            problems.append(
                Issue(line, "control_character", f"{col} {short(raw[col])} contains a control character ({where})")
            )
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
        problems.append(
            Issue(line, "unknown_winner", f"unknown winner {short(label)}; expected one of {', '.join(labels)}{hint}")
        )
    if values["model_a"] and values["model_a"] == values["model_b"]:
        problems.append(Issue(line, "self_comparison", f"model {short(values['model_a'])} compared with itself"))
    if problems:
        return None, problems
    values["winner"] = winner
    return [values[c] for c in header] + [label, line], []


def exclude_raters(judgments: Judgments, raters: list[str]) -> tuple[Judgments, dict[str, int]]:
    """``judgments`` without the rows of ``raters`` (e.g. those a judging session flagged), and
    the rows dropped per rater; JudgmentError when the file has no ``rater_id`` column."""
    if not raters:
        return judgments, {}
    if "rater_id" not in judgments.frame.columns:
        raise JudgmentError(f"{judgments.source}: no rater_id column, so no rater can be excluded")
    names = judgments.frame["rater_id"].astype(str).str.strip()
    dropped = {r: int((names == r).sum()) for r in raters}
    kept = judgments.frame[~names.isin(set(raters))].reset_index(drop=True)
    return Judgments(kept, judgments.issues, judgments.source, judgments.format, judgments.rows_read), dropped
