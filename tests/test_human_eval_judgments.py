"""The judgments CSV reader: schema, validation with file line numbers, encodings, fuzzing."""

import codecs
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from human_eval.judgments import JudgmentError, parse_judgments, read_judgments

GOOD = "model_a,model_b,winner\ncfg:3.0,unguided,a\nunguided,clip:2.0,tie\nclip:2.0,cfg:3.0,b\n"


def test_reads_rows_and_keeps_extra_columns():
    text = (
        "Model_A, model_b ,WINNER,question,rater_id,comment\n"
        'cfg:3.0,unguided,A,photorealism,r1,"fine, really"\n'
        " unguided , cfg:3.0 ,tie,caption,r2,\n"
    )
    j = parse_judgments(text, "x.csv")
    f = j.frame
    assert list(f["model_a"]) == ["cfg:3.0", "unguided"] and list(f["model_b"]) == ["unguided", "cfg:3.0"]
    assert list(f["winner"]) == ["a", "tie"] and list(f["winner_label"]) == ["A", "tie"]
    assert list(f["question"]) == ["photorealism", "caption"]
    assert list(f["comment"]) == ["fine, really", ""] and list(f["rater_id"]) == ["r1", "r2"]
    assert list(f["line"]) == [2, 3] and j.rows_read == 2 and not j.issues


def test_default_question_when_column_absent():
    assert set(parse_judgments(GOOD).frame["question"]) == {"all"}


def test_every_bad_row_reported_with_its_file_line():
    text = (
        "model_a,model_b,winner\n"  # 1
        "m1,m2,a\n"  # 2 ok
        "\n"  # 3 blank
        "m1,m2,draw\n"  # 4 unknown label
        "m1,m1,a\n"  # 5 self comparison
        '"multi\nline",m2,b\n'  # 6-7 quoted newline: a control character in a name
        "m1,,a\n"  # 8 missing model_b
        "m1,m2\n"  # 9 too few fields
        "m1,m2,model_a\n"
    )  # 10 arena label in glide format
    with pytest.raises(JudgmentError) as e:
        parse_judgments(text, "j.csv")
    msg = str(e.value)
    for line, what in (
        (4, "unknown winner 'draw'"),
        (5, "'m1' compared with itself"),
        (8, "missing model_b"),
        (9, "2 field(s) but the header has 3"),
        (10, "--format arena"),
        (6, "model_a 'multi\\nline' contains a control character (U+000A at character 6)"),
    ):
        assert f"j.csv:{line}: " in msg and what in msg
    assert "j.csv:2:" not in msg and "j.csv:7:" not in msg and "6 invalid row(s) of 7" in msg
    j = parse_judgments(text, "j.csv", drop_invalid=True)
    assert [i.line for i in j.issues] == [4, 5, 6, 8, 9, 10]
    assert j.issue_counts == {
        "unknown_winner": 2,
        "self_comparison": 1,
        "missing_field": 1,
        "field_count": 1,
        "control_character": 1,
    }
    assert list(j.frame["line"]) == [2] and list(j.frame["model_a"]) == ["m1"]


def test_unknown_label_is_never_a_tie():
    j = parse_judgments("model_a,model_b,winner\nx,y,Tie \nx,y,ties\nx,y,\n", drop_invalid=True)
    assert list(j.frame["winner"]) == ["tie"]
    assert [(i.line, i.kind) for i in j.issues] == [(3, "unknown_winner"), (4, "missing_field")]


def test_missing_required_columns_are_named():
    with pytest.raises(JudgmentError, match=r"f.csv:1: missing required column\(s\) model_b, winner"):
        parse_judgments("model_a,question\nx,y\n", "f.csv", drop_invalid=True)
    with pytest.raises(JudgmentError, match="empty file"):
        parse_judgments("\n\n", "f.csv")
    with pytest.raises(JudgmentError, match="duplicate column"):
        parse_judgments("model_a,model_b,winner,Winner\n")


def test_empty_question_is_a_missing_field():
    with pytest.raises(JudgmentError, match="x:3: missing question"):
        parse_judgments("model_a,model_b,winner,question\na,b,a,q\na,b,a,\n", "x")


def test_arena_format():
    text = (
        "model_a,model_b,winner,judge,tstamp\n"
        "gpt,glide,model_a,u1,1\nglide,gpt,model_b,u2,2\ngpt,glide,tie,u3,3\n"
        "gpt,glide,tie (bothbad),u4,4\ngpt,glide,a,u5,5\n"
    )
    with pytest.raises(JudgmentError, match=r"<data>:6: unknown winner 'a'.*--format glide"):
        parse_judgments(text, format="arena")
    f = parse_judgments(text, format="arena", drop_invalid=True).frame
    assert list(f["winner"]) == ["a", "b", "tie", "tie"]
    assert list(f["winner_label"])[-1] == "tie (bothbad)" and list(f["judge"]) == ["u1", "u2", "u3", "u4"]
    with pytest.raises(JudgmentError, match="unknown format"):
        parse_judgments(text, format="lmsys")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
def test_encodings_and_bom(tmp_path, encoding):
    text = GOOD.replace("unguided", "ungüided").replace("\n", "\r\n")
    path = tmp_path / "j.csv"
    path.write_bytes(text.encode(encoding))
    f = read_judgments(path).frame
    assert list(f.columns[:3]) == ["model_a", "model_b", "winner"] and f["model_b"].iloc[0] == "ungüided"
    assert list(f["line"]) == [2, 3, 4]


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "j.csv"
    path.write_bytes(GOOD.encode() + "caf\xe9,x,a\n".encode("cp1252"))
    with pytest.raises(JudgmentError, match=r"j.csv:5: not valid utf-8.*--encoding"):
        read_judgments(path)
    assert read_judgments(path, encoding="cp1252").frame["model_a"].iloc[-1] == "café"
    with pytest.raises(JudgmentError, match="cannot read"):
        read_judgments(tmp_path / "missing.csv")


def test_malformed_quoting_is_reported_with_line():
    with pytest.raises(JudgmentError, match=r"<data>:3: malformed CSV"):
        parse_judgments('model_a,model_b,winner\nx,y,a\n"x"z,y,a\n')


_ALPHABET = string.ascii_letters[:6] + ',"\r\n \t:;\x00\ufeff\u00e9' + "ab"
_CELLS = st.sampled_from(
    [
        "model_a",
        "model_b",
        "winner",
        "a",
        "b",
        "tie",
        "x",
        "y",
        "",
        '"',
        "question",
        "tie (bothbad)",
        "model_a,model_b,winner\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(alphabet=_ALPHABET, max_size=300).map(lambda s: s.encode("utf-8")),
        st.lists(st.lists(_CELLS, max_size=6).map(",".join), max_size=12).map(
            lambda rows: "\n".join(rows).encode("utf-8")
        ),
        st.lists(st.lists(_CELLS, min_size=3, max_size=4).map(",".join), max_size=8).map(
            lambda rows: ("model_a,model_b,winner\n" + "\n".join(rows)).encode("utf-16")
        ),
        st.binary(max_size=200).map(lambda b: codecs.BOM_UTF8 + b"model_a,model_b,winner\n" + b),
    ),
    st.sampled_from(["glide", "arena"]),
    st.booleans(),
)
def test_fuzz_reader_only_raises_judgment_error(data, fmt, drop):
    try:
        j = parse_judgments(data, "fuzz.csv", format=fmt, drop_invalid=drop)
    except JudgmentError as e:
        assert str(e)
        return
    f = j.frame
    assert set(f["winner"]) <= {"a", "b", "tie"}
    assert (f["model_a"] != f["model_b"]).all() and (f["model_a"] != "").all() and (f["model_b"] != "").all()
    assert len(f) + j.rows_dropped == j.rows_read
    assert drop or not j.issues
