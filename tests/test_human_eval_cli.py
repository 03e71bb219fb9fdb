"""`glide-eval elo` and `glide-eval elo-plot` end to end (click CliRunner)."""

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from glide_eval.cli import main
from human_eval.elo import analyze
from human_eval.judgments import read_judgments
from human_eval.names import parse_guidance

MODELS = {"unguided": 0.0, "cfg:1.0": 30.0, "cfg:3.0": 120.0, "clip:2.0": 50.0, "dalle": -60.0}


def write_judgments(path, n=1200, seed=0, questions=("photorealism", "caption"), extra_rows=""):
    rng = np.random.default_rng(seed)
    names = list(MODELS)
    s = np.array([MODELS[m] for m in names])
    rows = []
    for q in questions:
        a = rng.integers(0, len(names), n)
        b = (a + rng.integers(1, len(names), n)) % len(names)
        p = 1 / (1 + 10 ** ((s[b] - s[a]) / 400))
        u = rng.random(n)
        win = np.where(u < p - 0.1, "a", np.where(u < p + 0.1, "tie", "b"))
        rows += [f'{names[x]},{names[y]},{w},{q},"r{k % 7}, lab"' for k, (x, y, w) in enumerate(zip(a, b, win))]
    path.write_text("model_a,model_b,winner,question,rater_id\n" + "\n".join(rows) + "\n" + extra_rows)
    return path


def test_elo_json_and_files(tmp_path):
    src = write_judgments(tmp_path / "j.csv")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["elo", str(src), "--anchor", "unguided", "--rounds", "200", "--seed", "3", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [q["question"] for q in doc["questions"]] == ["caption", "photorealism"]
    assert doc["rows"] == {"read": 2400, "used": 2400, "dropped": 0}
    photo = doc["questions"][1]
    ratings = {r["model"]: r for r in photo["ratings"]}
    assert ratings["unguided"]["rating"] == 0 and ratings["unguided"]["lower"] == 0
    assert ratings["cfg:3.0"]["rank"] == 1 and ratings["cfg:3.0"]["lower"] > 0
    assert isinstance(ratings["cfg:3.0"]["n_judgments"], int)
    # the written tables are the same numbers as the library's
    judgments = read_judgments(src)
    expected = analyze(judgments, question="photorealism", anchor="unguided", rounds=200, seed=3)[0]
    table = pd.read_parquet(out / "ratings.parquet")
    table = table[table["question"] == "photorealism"].set_index("model")
    expected_table = expected.ratings_table().set_index("model")
    np.testing.assert_allclose(
        table.loc[expected_table.index, ["rating", "lower", "upper"]], expected_table[["rating", "lower", "upper"]]
    )
    assert pd.read_csv(out / "ratings.csv").shape == pd.read_parquet(out / "ratings.parquet").shape
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert len(pairs) == 2 * 5 * 4 and {"win_rate_lower", "predicted_upper"} <= set(pairs.columns)
    assert pd.read_parquet(out / "winrate_matrix.parquet").shape == (10, 2 + 5)
    prov = json.loads((out / "provenance.json").read_text())
    import hashlib

    assert prov["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert prov["options"]["rounds"] == 200 and prov["options"]["anchor"] == "unguided"
    assert prov["rows"]["used"] == 2400 and "numpy" in prov["versions"]
    assert not list(out.glob(".*tmp"))


def test_elo_text_table_and_default_out(tmp_path):
    src = write_judgments(tmp_path / "j.csv", questions=("photorealism",))
    res = CliRunner().invoke(main, ["elo", str(src), "--rounds", "50", "--question", "photorealism"])
    assert res.exit_code == 0, res.output
    assert "question: photorealism  (1200 judgments, 5 models, ratings sum to 0)" in res.stdout
    assert (tmp_path / "j_elo" / "ratings.csv").exists()


def test_invalid_rows_exit_1_or_are_dropped(tmp_path):
    src = write_judgments(
        tmp_path / "j.csv", n=200, questions=("q",), extra_rows="cfg:3.0,cfg:3.0,a,q,x\ndalle,unguided,draw,q,x\n"
    )
    res = CliRunner().invoke(main, ["elo", str(src), "--rounds", "20", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "j.csv:202: model 'cfg:3.0' compared with itself" in res.output
    assert "j.csv:203: unknown winner 'draw'" in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(
        main, ["elo", str(src), "--rounds", "20", "--out", str(tmp_path / "o"), "--drop-invalid", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert "dropped 2 invalid row(s) of 202" in res.stderr
    assert json.loads(res.stdout)["rows"] == {"read": 202, "used": 200, "dropped": 2}
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["rows"]["dropped_lines"] == [202, 203]


def test_arena_format_flag(tmp_path):
    src = tmp_path / "arena.csv"
    src.write_text("model_a,model_b,winner\n" + "x,y,model_a\ny,x,model_a\nx,y,tie (bothbad)\n" * 5)
    assert CliRunner().invoke(main, ["elo", str(src), "--rounds", "10"]).exit_code == 1
    res = CliRunner().invoke(main, ["elo", str(src), "--format", "arena", "--rounds", "10", "--json"])
    assert res.exit_code == 0, res.output
    ratings = {r["model"]: r["rating"] for r in json.loads(res.stdout)["questions"][0]["ratings"]}
    assert abs(ratings["x"] - 0) < 1e-6 and abs(ratings["y"]) < 1e-6  # 7.5 : 7.5 after ties


def test_separable_data_errors_then_l2(tmp_path):
    src = tmp_path / "sep.csv"
    src.write_text("model_a,model_b,winner\n" + "best,u,a\nu,v,a\nv,u,a\n" * 4)
    res = CliRunner().invoke(main, ["elo", str(src), "--rounds", "10"])
    assert res.exit_code == 1 and "{best} never lost (or tied) against {u, v}" in res.output
    res = CliRunner().invoke(main, ["elo", str(src), "--rounds", "10", "--l2", "0.1"])
    assert res.exit_code == 0 and "finite only because of --l2 0.1" in res.output


def test_elo_plot_from_judgments_and_from_ratings(tmp_path):
    src = write_judgments(tmp_path / "j.csv")
    res = CliRunner().invoke(
        main, ["elo-plot", str(src), "--out", str(tmp_path / "fig7.png"), "--rounds", "50", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["skipped_models"] == ["dalle"]
    assert (tmp_path / "fig7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "fig7.pdf").read_bytes()[:5] == b"%PDF-"
    out = tmp_path / "elo"
    assert CliRunner().invoke(main, ["elo", str(src), "--rounds", "20", "--out", str(out)]).exit_code == 0
    res = CliRunner().invoke(main, ["elo-plot", str(out), "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 1 and "--anchor unguided" in res.output  # not relative to unguided
    assert (
        CliRunner()
        .invoke(main, ["elo", str(src), "--rounds", "20", "--out", str(out), "--anchor", "unguided"])
        .exit_code
        == 0
    )
    for ratings in (out, out / "ratings.csv", out / "ratings.parquet"):
        res = CliRunner().invoke(main, ["elo-plot", str(ratings), "--out", str(tmp_path / "g.png")])
        assert res.exit_code == 0, res.output
        assert (tmp_path / "g.pdf").exists()


def test_guidance_names():
    assert parse_guidance("cfg:3.0") == ("cfg", 3.0)
    assert parse_guidance(" clip : 2 ") == ("clip", 2.0)
    assert parse_guidance("cfg:1e1") == ("cfg", 10.0)
    for name in ("unguided", "dalle", "cfg:", "cfg:abc", "a:b:1", "cfg:nan"):
        assert parse_guidance(name) is None


def test_elo_plot_reports_unreadable_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"model_a,model_b\n\xff\xfe\x00")
    res = CliRunner().invoke(main, ["elo-plot", str(bad), "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 1 and "bad.csv:2: not valid utf-8" in res.output
    res = CliRunner().invoke(main, ["elo-plot", str(tmp_path), "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 1 and "no ratings.parquet or ratings.csv" in res.output
