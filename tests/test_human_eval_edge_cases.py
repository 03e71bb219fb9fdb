"""Issue 18 items 6-8: the judgment-file and Elo edge cases a fuzzer found, one test each."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from glide_eval.cli import main
from human_eval.elo import analyze, win_probability
from human_eval.figure7 import FigureError, draw_panel, guidance_curves
from human_eval.judgments import JudgmentError, parse_judgments

matplotlib.use("Agg")
GOOD = "model_a,model_b,winner\n" + "x,y,a\ny,x,a\nx,y,b\nx,z,a\nz,x,a\ny,z,tie\n"


def _cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


@pytest.fixture
def good_csv(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text(GOOD)
    return path


@pytest.mark.parametrize(
    "args,what",
    [
        (["--seed", "-1"], "--seed"),
        (["--encoding", "punycode"], "punycode"),
        (["--encoding", "rot13"], "rot13"),
        (["--encoding", "nope"], "nope"),
        (["--l2", "nan"], "--l2"),
        (["--l2", "inf"], "--l2"),
    ],
)
def test_bad_options_are_usage_errors(good_csv, args, what):
    res = _cli("elo", good_csv, "--rounds", "5", *args)
    assert res.exit_code == 2 and what in res.output and "Traceback" not in res.output


def test_unterminated_quote_reported_where_it_opens():
    text = 'model_a,model_b,winner\nx,y,a\nx,"y,a\nx,y,b\nx,z,a\n'
    with pytest.raises(JudgmentError, match=r"^f.csv:3: malformed CSV: a quote opened on this line is never closed"):
        parse_judgments(text, "f.csv")


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r\r\n", "\r"])
def test_line_numbers_do_not_depend_on_line_endings(ending):
    lines = ["model_a,model_b,winner", "x,y,a", "x,y,draw", "", 'x,"y', 'z",a', "x,x,a"]
    j = parse_judgments(ending.join(lines) + ending, "f.csv", drop_invalid=True)
    assert [(i.line, i.kind) for i in j.issues] == [
        (3, "unknown_winner"),
        (5, "control_character"),
        (7, "self_comparison"),
    ]
    assert list(j.frame["line"]) == [2]


def test_anchor_is_trimmed_like_names_in_the_file(good_csv):
    spaced = json.loads(_cli("elo", good_csv, "--rounds", "20", "--anchor", " x ", "--json").stdout)
    plain = json.loads(_cli("elo", good_csv, "--rounds", "20", "--anchor", "x", "--json").stdout)
    assert spaced["questions"][0]["anchor"] == "x"
    assert spaced["questions"][0]["ratings"] == plain["questions"][0]["ratings"]


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\u2029", "\t"])
def test_control_characters_in_names_are_bad_rows(char):
    text = GOOD + f"x{char},y,a\n"
    with pytest.raises(JudgmentError, match=rf"f.csv:8: model_a .* contains a control character \(U\+{ord(char):04X}"):
        parse_judgments(text, "f.csv")
    assert len(parse_judgments(text, "f.csv", drop_invalid=True).frame) == 6


def test_one_huge_field_is_one_bad_row(tmp_path):
    huge = "q" * 131_073
    path = tmp_path / "j.csv"
    path.write_text("model_a,model_b,winner\nx,y,a\n" + f"{huge},y,a\n" + GOOD.split("\n", 1)[1])
    res = _cli("elo", path, "--rounds", "5")
    assert res.exit_code == 1 and "j.csv:3: model_a has 131,073 characters (at most 131,072)" in res.output
    res = _cli("elo", path, "--rounds", "5", "--drop-invalid", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["rows"] == {"read": 8, "used": 7, "dropped": 1}
    assert "q" * 100 not in res.output  # the label is never echoed whole
    ok = "q" * 131_072  # at the limit: a valid (if odd) name
    assert len(parse_judgments(f"model_a,model_b,winner\n{ok},y,a\n").frame) == 1


def test_long_model_names_are_cut_on_screen(tmp_path):
    long = "m" * 5000
    path = tmp_path / "j.csv"
    path.write_text("model_a,model_b,winner\n" + f"{long},y,a\ny,{long},a\n" * 3)
    res = _cli("elo", path, "--rounds", "5", "--out", tmp_path / "out")
    assert res.exit_code == 0 and "m" * 79 + "\u2026" in res.output and "m" * 80 not in res.output
    assert long in set(pd.read_csv(tmp_path / "out" / "ratings.csv")["model"])  # files keep whole names


def test_long_labels_are_cut_in_messages():
    label = "w" * 100_000
    j = parse_judgments(f"model_a,model_b,winner\nx,y,{label}\n", "f.csv", drop_invalid=True)
    message = j.issues[0].message
    assert len(message) < 200 and "'" + "w" * 79 + "'\u2026" in message


def test_disconnected_graph_with_l2_names_groups_and_predicts_nothing_across(tmp_path):
    rows = "a,b,a\nb,a,a\na,b,a\nc,d,a\nd,c,a\nd,c,b\n"
    path = tmp_path / "j.csv"
    path.write_text("model_a,model_b,winner\n" + rows * 3)
    res = _cli("elo", path, "--rounds", "30", "--l2", "0.1", "--json")
    assert res.exit_code == 0, res.output
    q = json.loads(res.stdout)["questions"][0]
    assert q["comparison_groups"] == [["a", "b"], ["c", "d"]]
    assert any("not across groups" in w and "{a, b}; {c, d}" in w for w in q["warnings"])
    ratings = {r["model"]: r["rating"] for r in q["ratings"]}
    for p in q["pairs"]:
        same = {p["model"], p["opponent"]} in ({"a", "b"}, {"c", "d"})
        if same:
            assert p["predicted"] == pytest.approx(win_probability(ratings[p["model"]], ratings[p["opponent"]]))
            assert p["predicted_lower"] is not None
        else:
            assert p["predicted"] is None and p["predicted_lower"] is None and p["predicted_upper"] is None
    pairs = pd.read_csv(path.with_name("j_elo") / "pairs.csv")
    across = pairs["model"].isin(["a", "b"]) != pairs["opponent"].isin(["a", "b"])
    assert pairs.loc[across, "predicted"].isna().all() and pairs.loc[~across, "predicted"].notna().all()
    text = _cli("elo", path, "--rounds", "30", "--l2", "0.1").output
    assert "ratings are comparable only within each group" in text


def test_elo_plot_shows_the_fits_warnings(tmp_path):
    # cfg:3 wins 18 of 20: about 0.9^20 = 12% of bootstrap replicates have unguided never winning
    path = tmp_path / "j.csv"
    path.write_text("model_a,model_b,winner\n" + "cfg:3,unguided,a\n" * 18 + "cfg:3,unguided,b\n" * 2)
    res = _cli("elo-plot", path, "--out", tmp_path / "f.png", "--rounds", "300", "--json")
    assert res.exit_code == 0, res.output
    warnings = json.loads(res.stdout)["warnings"]
    assert len(warnings) == 1 and "bootstrap replicates were separable" in warnings[0]
    n_left_out = int(warnings[0].split(": ")[1].split(" of ")[0])
    assert 15 < n_left_out < 65
    res = _cli("elo-plot", path, "--out", tmp_path / "f.png", "--rounds", "300")
    assert "warning: question all: " in res.output
    out = tmp_path / "elo"
    assert _cli("elo", path, "--rounds", "300", "--anchor", "unguided", "--out", out).exit_code == 0
    res = _cli("elo-plot", out, "--out", tmp_path / "g.png", "--json")
    assert json.loads(res.stdout)["warnings"] == [
        f"question all: {n_left_out} of 300 bootstrap replicates were separable or disconnected and left out, "
        "so the intervals understate the uncertainty"
    ]


def test_elo_plot_refuses_two_spellings_of_one_setting(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text(
        "model_a,model_b,winner\n" + "cfg:3,unguided,a\nunguided,cfg:3.0,a\ncfg:3,cfg:3.0,tie\n"
        "unguided,cfg:3,a\ncfg:3.0,unguided,a\n"
    )
    res = _cli("elo-plot", path, "--out", tmp_path / "f.png", "--rounds", "10")
    assert res.exit_code == 1 and "'cfg:3' and 'cfg:3.0' are both cfg at scale 3" in res.output
    assert not (tmp_path / "f.png").exists()


def test_single_scale_family_draws_its_interval():
    import matplotlib.pyplot as plt

    ratings = pd.DataFrame(
        {
            "question": "all",
            "model": ["clip:2", "cfg:1", "cfg:3"],
            "rating": [40.0, 10.0, 80.0],
            "lower": [5.0, -20.0, 50.0],
            "upper": [90.0, 30.0, 120.0],
            "anchor": "unguided",
        }
    )
    curves, _ = guidance_curves(ratings)
    fig, ax = plt.subplots()
    draw_panel(ax, curves)
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    segments = sorted((float(s[0][0]), float(s[0][1]), float(s[1][1])) for b in bars for s in b.get_segments())
    assert segments == [(1.0, -20.0, 30.0), (2.0, 5.0, 90.0), (3.0, 50.0, 120.0)]
    plt.close(fig)


def test_analyze_refuses_non_finite_l2():
    frame = parse_judgments(GOOD).frame
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            analyze(frame, rounds=0, l2=bad)
    assert np.isfinite(analyze(frame, rounds=0, l2=0.5)[0].ratings).all()


def test_guidance_curves_refuse_spellings_in_a_ratings_table():
    ratings = pd.DataFrame(
        {
            "question": "q",
            "model": ["cfg:3", "cfg: 3.0"],
            "rating": [1.0, 2.0],
            "lower": [0.0, 0.0],
            "upper": [3.0, 3.0],
            "anchor": "unguided",
        }
    )
    with pytest.raises(FigureError, match="'cfg: 3.0' and 'cfg:3' are both cfg at scale 3"):
        guidance_curves(ratings)
