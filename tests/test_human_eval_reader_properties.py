"""Property-based test of the judgments reader (issue 18's fuzzer classes): files built from known
good and bad rows, with random line endings, encodings, blank lines and multi-line quoted fields.
For every file: no exception but JudgmentError, every bad row reported as FILE:LINE at its line,
every good row read with its line, nothing silently accepted (an unknown label never becomes a
tie), and the CLI's exit codes (1 for bad rows without --drop-invalid, 0 otherwise)."""

import json

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glide_eval.cli import main
from human_eval.judgments import JudgmentError, parse_judgments

MODELS = ["cfg:3", "unguided", "clip:2", "dalle", "m\u00e9"]
GOOD_LABELS = {"a": "a", "b": "b", "tie": "tie", "A": "a", " Tie ": "tie", "TIE": "tie"}
BAD_LABELS = ["draw", "ties", "model_a", "c", "tie (bothbad)", "1", "\u00e1"]
CONTROL = ["\x00", "\x07", "\t", "\x1b", "\u2028"]
HEADER = "model_a,model_b,winner,comment"


@st.composite
def rows(draw):
    """(kind, physical lines of the row's text, expected winner or None): one row of the file."""
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "good_multiline",
                "blank",
                "unknown_winner",
                "self_comparison",
                "missing_field",
                "field_count",
                "control_character",
            ]
        )
    )
    a, b = draw(st.lists(st.sampled_from(MODELS), min_size=2, max_size=2, unique=True))
    label = draw(st.sampled_from(sorted(GOOD_LABELS)))
    if kind == "good":
        return kind, [f"{a},{b},{label},ok"], (a, b, GOOD_LABELS[label])
    if kind == "good_multiline":
        n = draw(st.integers(1, 3))
        comment = '"' + "\n".join(["line"] * (n + 1)) + '"'
        return "good", f"{a},{b},{label},{comment}".split("\n"), (a, b, GOOD_LABELS[label])
    if kind == "blank":
        return kind, [draw(st.sampled_from(["", "  "]))], None
    if kind == "unknown_winner":
        return kind, [f"{a},{b},{draw(st.sampled_from(BAD_LABELS))},x"], None
    if kind == "self_comparison":
        return kind, [f"{a},{a},{label},x"], None
    if kind == "missing_field":
        return kind, [draw(st.sampled_from([f",{b},{label},x", f"{a},,{label},x", f"{a},{b},,x"]))], None
    if kind == "field_count":
        return kind, [draw(st.sampled_from([f"{a},{b}", f"{a},{b},{label},x,extra"]))], None
    name = a[:1] + draw(st.sampled_from(CONTROL)) + a[1:]
    return kind, [f'"{name}",{b},{label},x'], None


@st.composite
def files(draw):
    body = draw(st.lists(rows(), max_size=12))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r\r\n"]))
    lines, bad, good, line = [HEADER], {}, [], 2
    for kind, text, expected in body:
        if kind not in ("good", "blank"):
            bad[line] = kind
        elif kind == "good":
            good.append((line, *expected))
        lines += text
        line += len(text)
    text = ending.join(lines) + ending
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    return text.encode(encoding), bad, good


def _check_frame(j, good):
    f = j.frame
    got = list(zip(f["line"], f["model_a"], f["model_b"], f["winner"]))
    assert got == good


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files(), st.booleans())
def test_reader_reports_every_bad_row_at_its_line(case, drop):
    data, bad, good = case
    try:
        j = parse_judgments(data, "fuzz.csv", drop_invalid=drop)
    except JudgmentError as e:
        assert bad and not drop
        message = str(e)
        assert f"{len(bad)} invalid row(s) of {len(bad) + len(good)}" in message
        *rows, advice = message.splitlines()[1:]
        assert {int(line.split(":")[1]) for line in rows} == set(bad)
        assert "--drop-invalid" in advice
        return
    assert drop or not bad
    assert {i.line: i.kind for i in j.issues} == bad
    assert j.report().count("fuzz.csv:") == len(j.issues)
    _check_frame(j, good)
    assert j.rows_read == len(bad) + len(good)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), max_size=8), st.data(), st.sampled_from(["\n", "\r\n", "\r\r\n"]))
def test_unterminated_quote_reported_where_it_opens(body, data, ending):
    k = data.draw(st.integers(0, len(body)))
    opened = 2 + sum(len(text) for _, text, _ in body[:k])
    body = body[:k] + [("open", ['x,y,a,"never closed'], None)] + body[k:]
    text = ending.join([HEADER] + [line for _, lines, _ in body for line in lines]) + ending
    try:
        parse_judgments(text, "q.csv", drop_invalid=True)
    except JudgmentError as e:
        assert str(e).startswith(f"q.csv:{opened}: malformed CSV: a quote opened on this line ")
    else:
        raise AssertionError("an unterminated quote was accepted")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files(), st.booleans())
def test_cli_exit_codes(tmp_path_factory, case, drop):
    data, bad, good = case
    path = tmp_path_factory.mktemp("fuzz") / "j.csv"
    path.write_bytes(data)
    args = ["elo", str(path), "--rounds", "0", "--l2", "0.1", "--json", "--out", str(path.parent / "out")]
    res = CliRunner().invoke(main, args + (["--drop-invalid"] if drop else []))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    expected = 0 if (drop or not bad) and good else 1
    assert res.exit_code == expected, res.output
    for line in bad:
        assert f"j.csv:{line}: " in res.output
    if expected == 0:
        doc = json.loads(res.stdout)
        assert doc["rows"] == {"read": len(bad) + len(good), "used": len(good), "dropped": len(bad)}
