"""`glide-eval judge`: run-directory reader, append-only store, pair scheduler, web app (Starlette
TestClient). Every CSV written here is read back with human_eval's own reader."""

from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from judge_runs import CAPTIONS, sample_image, write_run
from PIL import Image
from starlette.testclient import TestClient

from glide_eval.cli import main
from glide_eval.judge.images import JudgeImagesError, build_catalog
from human_eval.fit import ELO_PER_NAT, PairCounts, fit_elo, neg_log_likelihood
from human_eval.judge.app import MAX_BODY, JudgeApp
from human_eval.judge.scheduler import (
    Scheduler,
    adaptive_choice,
    balanced_choice,
    rating_covariance,
    variance_after_one_more,
)
from human_eval.judge.store import COLUMNS, JudgmentStore, StoreError, utc_timestamp
from human_eval.judgments import read_judgments


def row(k: int, rater: str = "r1", **over) -> dict:
    base = {
        "model_a": "cfg:3",
        "model_b": "unguided",
        "winner": "a",
        "question": "photorealism",
        "prompt_id": k,
        "rater_id": rater,
        "timestamp": utc_timestamp(),
        "judgment_id": f"{k:032x}",
        "left_model": "cfg:3",
        "right_model": "unguided",
        "image_a": f"run/cfg-3/{k:06d}",
        "image_b": f"run/unguided/{k:06d}",
        "seed": 7,
        "caption": 'a, "quoted" caption',
    }
    return {**base, **over}


# ---------------------------------------------------------------- store


def test_store_appends_once_survives_reopen_and_torn_tail(tmp_path):
    path = tmp_path / "j.csv"
    with JudgmentStore(path) as store:
        assert store.append(row(1)) and store.append(row(2, winner="tie"))
        assert not store.append(row(1, winner="b"))  # same judgment id: not written again
    assert path.read_text().count("\n") == 3
    with open(path, "ab") as f:  # a kill in the middle of a write
        f.write(b"cfg:3,unguided,a,photo")
    with JudgmentStore(path) as store:
        assert store.repaired_bytes == len(b"cfg:3,unguided,a,photo")
        assert [r["judgment_id"] for r in store.rows()] == [f"{1:032x}", f"{2:032x}"]
        assert not store.append(row(2)) and store.append(row(3))
    frame = read_judgments(path).frame  # the reader `glide-eval elo` uses
    assert list(frame["winner"]) == ["a", "tie", "a"] and list(frame["prompt_id"]) == ["1", "2", "3"]
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)


def test_store_refuses_a_second_writer_other_headers_and_line_breaks(tmp_path):
    path = tmp_path / "j.csv"
    with JudgmentStore(path) as store:
        with pytest.raises(StoreError, match="another judging server"):
            JudgmentStore(path)
        with pytest.raises(ValueError, match="line breaks"):
            store.append(row(1, caption="two\nlines"))
        assert len(store) == 0
    other = tmp_path / "other.csv"
    other.write_text("model_a,model_b,winner\nx,y,a\n")
    with pytest.raises(StoreError, match="other.csv:1: header"):
        JudgmentStore(other)


def test_store_concurrent_appends_and_undo(tmp_path):
    path = tmp_path / "j.csv"
    with JudgmentStore(path) as store:

        def rater(r):
            for k in range(50):
                store.append(row(r * 1000 + k, rater=f"r{r}"))

        threads = [threading.Thread(target=rater, args=(r,)) for r in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(read_judgments(path).frame) == 200
        last = store.rows()[-1]
        with pytest.raises(ValueError, match="not rater 'r9'"):
            store.remove(last["judgment_id"], "r9", 30)
        removed = store.remove(last["judgment_id"], last["rater_id"], 30)
        assert removed["judgment_id"] == last["judgment_id"]
    frame = read_judgments(path).frame
    assert len(frame) == 199 and last["judgment_id"] not in set(frame["judgment_id"])
    assert frame.groupby("rater_id").size().sort_values().tolist() == [49, 50, 50, 50]
    assert not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------- scheduler


def test_covariance_is_the_inverse_fisher_information_of_the_elo_likelihood():
    rng = np.random.default_rng(0)
    m = 5
    i, j = np.triu_indices(m, 1)
    theta = rng.normal(0, 1, m)
    theta -= theta.mean()
    n = rng.integers(5, 50, len(i)).astype(float)
    p = 1 / (1 + np.exp(theta[j] - theta[i]))
    pc = PairCounts([str(k) for k in range(m)], i, j, np.stack([n * p, n * (1 - p), 0 * n], 1))
    eps, hess = 1e-5, np.zeros((m, m))  # numerical Hessian of human_eval's own loss
    for k in range(m):
        d = np.zeros(m)
        d[k] = eps
        hess[:, k] = (neg_log_likelihood(theta + d, pc)[1] - neg_log_likelihood(theta - d, pc)[1]) / (2 * eps)
    centre = np.eye(m) - 1 / m
    np.testing.assert_allclose(rating_covariance(theta, i, j, n), centre @ np.linalg.pinv(hess) @ centre, atol=1e-6)
    after = variance_after_one_more(theta, rating_covariance(theta, i, j, n), i, j)
    for k in range(len(i)):  # rank-one update == recomputing with one more judgment
        more = n.copy()
        more[k] += 1
        np.testing.assert_allclose(after[k], np.diag(rating_covariance(theta, i, j, more)), rtol=1e-8)


def test_balanced_spreads_evenly_and_adaptive_favours_informative_pairs():
    rng = np.random.default_rng(1)
    n = np.array([3, 1, 1, 2])
    picks = {balanced_choice(n, rng) for _ in range(50)}
    assert picks == {1, 2}
    ratings = np.array([0.0, 40.0, 80.0, 700.0])  # model 3 far above the rest
    m = len(ratings)
    i, j = np.triu_indices(m, 1)
    p = 1 / (1 + 10 ** ((ratings[j] - ratings[i]) / 400))
    counts = np.zeros((len(i), 3))
    for _ in range(400):
        k = adaptive_choice(counts, i, j, m, rng)
        counts[k, 0 if rng.random() < p[k] else 1] += 1
    per_pair = dict(zip(zip(i.tolist(), j.tolist()), counts.sum(1)))
    # the far pairs (0,3), (1,3) say little: the nearest pair to the top model (2,3) gets most
    assert per_pair[(2, 3)] > per_pair[(0, 3)] and per_pair[(2, 3)] > per_pair[(1, 3)]
    theta = fit_elo(PairCounts([str(k) for k in range(m)], i, j, counts)) / ELO_PER_NAT
    final = np.diag(rating_covariance(theta, i, j, counts.sum(1))).max()
    balanced = np.diag(rating_covariance(theta, i, j, np.full(len(i), 400 / len(i)))).max()
    assert final < 0.9 * balanced  # same 400 judgments, narrower widest interval


def test_scheduler_balances_questions_pairs_and_prompts():
    s = Scheduler(
        ["a", "b", "c"], ["photorealism", "caption"], {(0, 1): [0, 1], (0, 2): [0, 1], (1, 2): [0, 1]}, seed=3
    )
    seen = []
    for k in range(12):
        t = s.next_trial("r1", f"t{k}")
        a, b = s.pairs[t.pair]
        s.record(t.question, s.models[a], s.models[b], "a", t.prompt_id, "r1", f"t{k}")
        seen.append((t.question, t.pair, t.prompt_id))
    assert sorted(seen) == sorted({(q, p, x) for q in ("photorealism", "caption") for p in range(3) for x in (0, 1)})


# ---------------------------------------------------------------- run directories


def test_catalog_reads_png_and_npz_runs_and_names_models(tmp_path):
    run = write_run(tmp_path)
    catalog = build_catalog([run])
    assert catalog.models == ["unguided", "cfg:1", "cfg:3"] and catalog.seed == 7
    assert catalog.captions == dict(enumerate(CAPTIONS))
    entry = catalog.images["cfg:1"][5]
    assert entry.image_id == "run/cfg-1/000005" and entry.path.name == "00001_000004.npz" and entry.index == 1
    assert catalog.pair_prompts() == {p: list(range(6)) for p in [(0, 1), (0, 2), (1, 2)]}
    only = build_catalog([run], ["cfg:3", "unguided"])
    assert only.models == ["cfg:3", "unguided"]
    with pytest.raises(JudgeImagesError, match="unknown cfg:9"):
        build_catalog([run], ["cfg:9", "unguided"])


def test_runs_without_images_or_with_other_captions_are_refused(tmp_path):
    bare = write_run(tmp_path, "bare", save=())
    with pytest.raises(JudgeImagesError, match=r"saved no images.*--save-images png"):
        build_catalog([bare])
    res = CliRunner().invoke(main, ["judge", str(bare), "--out", str(tmp_path / "j.csv")])
    assert res.exit_code == 1 and "glide-eval sweep CONFIG --save-images png" in res.output
    assert not (tmp_path / "j.csv").exists()
    a = write_run(tmp_path, "a", save=("unguided",))
    b = write_run(tmp_path, "b", captions=CAPTIONS[:2] + ["another caption"], save=("cfg-3",))
    with pytest.raises(JudgeImagesError, match="different captions at sample 2"):
        build_catalog([a, b])
    c = write_run(tmp_path, "c", save=("cfg-3", "unguided"))
    both = build_catalog([a, c])  # unguided in both runs: named by run
    assert both.models == ["a/unguided", "c/unguided", "cfg:3"]


# ---------------------------------------------------------------- web app


@pytest.fixture
def session(tmp_path):
    run = write_run(tmp_path)
    store = JudgmentStore(tmp_path / "judgments.csv")
    app = JudgeApp(build_catalog([run]), store, ["photorealism", "caption"], seed=0, target=20)
    with TestClient(app.app) as client:
        yield app, client, run
    store.close()


def answer(client, trial, side, rater="r1"):
    return client.post("/api/answer", json={**trial, "rater_id": rater, "answer": side})


def test_answers_are_written_in_the_elo_schema(session, tmp_path):
    app, client, _run = session
    expected = []
    for k in range(12):
        shown = client.post("/api/next", json={"rater_id": "r1"}).json()
        trial = shown["trial"]
        side = ("left", "right", "tie")[k % 3]
        assert answer(client, trial, side).json()["status"] == "recorded"
        model_a, model_b = (app.catalog.models[m] for m in app.scheduler.pairs[trial["pair"]])
        left_model, right_model = (model_a, model_b) if trial["left"] == "a" else (model_b, model_a)
        images = app.catalog.images
        assert shown["left_image"] == app.image_url(images[left_model][trial["prompt_id"]].image_id)
        assert shown["right_image"] == app.image_url(images[right_model][trial["prompt_id"]].image_id)
        text = json.dumps(shown)  # raters judge blind: no model or setting names
        assert not any(name in text for name in ("unguided", "cfg:1", "cfg:3", "cfg-1", "cfg-3"))
        assert shown["caption"] == CAPTIONS[trial["prompt_id"]]
        winner = {"left": left_model, "right": right_model, "tie": "tie"}[side]
        expected.append((trial["trial_id"], winner, left_model))
    assert answer(client, trial, "left").json()["status"] == "duplicate"  # resent: not written twice
    judgments = read_judgments(app.store.path)
    assert judgments.issues == [] and len(judgments.frame) == 12
    for (jid, winner, left), r in zip(expected, judgments.frame.itertuples()):
        assert r.judgment_id == jid and r.left_model == left
        assert winner == ("tie" if r.winner == "tie" else (r.model_a if r.winner == "a" else r.model_b))
        assert r.image_a == f"run/{r.model_a.replace(':', '-')}/{int(r.prompt_id):06d}"
    assert sorted(judgments.frame["question"].value_counts().tolist()) == [6, 6]
    res = CliRunner().invoke(
        main, ["elo", str(app.store.path), "--rounds", "20", "--l2", "0.1", "--out", str(tmp_path / "elo")]
    )
    assert res.exit_code == 0, res.output
    assert "dropped" not in res.output


def test_bad_requests_get_4xx_and_write_nothing(session):
    app, client, _run = session
    trial = client.post("/api/next", json={"rater_id": "r1"}).json()["trial"]
    body = {**trial, "rater_id": "r1", "answer": "left"}
    cases = [
        ({**body, "answer": "up"}, 400, "answer must be"),
        ({**body, "left": "c"}, 400, "left must be"),
        ({**body, "pair": 3}, 404, "unknown pair id"),
        ({**body, "pair": "0"}, 404, "unknown pair id"),
        ({**body, "pair": (trial["pair"] + 1) % 3}, 400, "signature"),
        ({**body, "prompt_id": 99}, 404, "unknown prompt_id"),
        ({**body, "prompt_id": True}, 404, "unknown prompt_id"),
        ({**body, "question": "beauty"}, 400, "unknown question"),
        ({**body, "rater_id": "<script>"}, 400, "rater_id"),
        ({**body, "trial_id": "x" * 32}, 400, "trial_id"),
        ({**body, "extra": 1}, 400, "unknown field"),
        ({**body, "prompt_id": (trial["prompt_id"] + 1) % 6}, 400, "signature"),
        ({**body, "left": "b" if trial["left"] == "a" else "a"}, 400, "signature"),
    ]
    for data, status, message in cases:
        res = client.post("/api/answer", json=data)
        assert res.status_code == status and message in res.json()["error"], (data, res.text)
    res = client.post(
        "/api/answer", content=b"{" + b" " * MAX_BODY + b"}", headers={"content-type": "application/json"}
    )
    assert res.status_code == 413
    chunked = client.post(
        "/api/answer", content=iter([b"{", b" " * MAX_BODY, b"}"]), headers={"content-type": "application/json"}
    )  # no content-length
    assert chunked.status_code == 413
    assert client.post("/api/answer", content=b"[1]", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/api/answer", content=b"{oops", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/api/answer", data={"answer": "left"}).status_code == 415
    assert client.post("/api/next", json={"rater_id": ""}).status_code == 400
    assert len(read_judgments(app.store.path).frame) == 0


def test_images_only_from_the_run_directories(session, tmp_path):
    app, client, run = session
    png = client.get(app.image_url("run/unguided/000002"))
    assert png.status_code == 200 and png.content == (run / "images/unguided/000002.png").read_bytes()
    from_npz = client.get(app.image_url("run/cfg-1/000005"))
    decoded = np.asarray(Image.open(io.BytesIO(from_npz.content))).transpose(2, 0, 1)
    np.testing.assert_array_equal(decoded, sample_image("cfg-1", 5))
    (tmp_path / "secret.png").write_bytes(b"not for raters")
    target = run / "images/cfg-3/000003.png"
    target.unlink()
    os.symlink(tmp_path / "secret.png", target)  # a symlink out of the run directory
    assert client.get(app.image_url("run/cfg-3/000003")).status_code == 403
    assert client.get("/image/run/unguided/000002.png").status_code == 404  # names are not URLs
    for url in [
        "/image/run/../../secret.png",
        "/image/%2e%2e/%2e%2e/secret.png",
        "/image/run/unguided/..%2f..%2fconfig.toml",
        app.image_url("run/unguided/000002")[:-4],
        "/image/run/config.toml",
        "/image/%2fetc%2fpasswd",
        "/image/run/cfg-3/000099.png",
    ]:
        res = client.get(url)
        assert 400 <= res.status_code < 500 and b"not for raters" not in res.content, url


def test_adaptive_session_and_cli_options(tmp_path):
    run = write_run(tmp_path)
    with JudgmentStore(tmp_path / "j.csv") as store:
        app = JudgeApp(build_catalog([run]), store, ["caption"], adaptive=True, seed=2)
        rng = np.random.default_rng(0)
        with TestClient(app.app) as client:
            for _ in range(30):
                trial = client.post("/api/next", json={"rater_id": "r1"}).json()["trial"]
                assert trial["question"] == "caption"
                assert answer(client, trial, ("left", "right", "tie")[rng.integers(3)]).status_code == 200
    frame = read_judgments(store.path).frame
    assert len(frame) == 30 and set(frame["question"]) == {"caption"}
    assert frame.groupby(["model_a", "model_b"]).size().min() >= 1
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(tmp_path / "k.csv"), "--questions", "beauty"])
    assert res.exit_code == 2 and "unknown beauty" in res.output
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(tmp_path / "k.csv"), "--settings", "cfg:3"])
    assert res.exit_code == 1 and "need two settings" in res.output and not (tmp_path / "k.csv").exists()


def test_undo_restart_and_elo_page(session, tmp_path):
    app, client, run = session
    trial = client.post("/api/next", json={"rater_id": "r1"}).json()["trial"]
    jid = answer(client, trial, "left").json()["judgment_id"]
    assert client.post("/api/undo", json={"rater_id": "r2", "judgment_id": jid}).status_code == 409
    undone = client.post("/api/undo", json={"rater_id": "r1", "judgment_id": jid})
    assert undone.status_code == 200 and undone.json()["trial"] == trial
    assert client.post("/api/undo", json={"rater_id": "r1", "judgment_id": jid}).status_code == 409
    assert len(read_judgments(app.store.path).frame) == 0
    pending = client.post("/api/next", json={"rater_id": "r1"}).json()["trial"]
    answer(client, trial, "right")
    app.store.close()  # "restart": a new app on the same files
    with JudgmentStore(app.store.path) as store:
        again = JudgeApp(build_catalog([run]), store, ["photorealism", "caption"], target=20)
        with TestClient(again.app) as client2:
            assert answer(client2, trial, "left").json()["status"] == "duplicate"
            assert answer(client2, pending, "tie").json()["status"] == "recorded"  # handed out before
            rng = np.random.default_rng(5)
            for _ in range(40):
                t = client2.post("/api/next", json={"rater_id": "r2"}).json()["trial"]
                answer(client2, t, ("left", "right", "tie")[rng.integers(3)], rater="r2")
            page = client2.get("/elo").text
            counts = client2.get("/api/pairs").json()
        frame = read_judgments(store.path).frame
    assert len(frame) == 42 and frame["judgment_id"].is_unique
    assert counts["judgments"] == 42 and sum(p["n"] for p in counts["pairs"]) == 42
    assert "Current Elo ratings" in page and "Not enough" not in page
    assert all(f"<td>{m}</td>" in page for m in ("unguided", "cfg:1", "cfg:3"))
    for p in counts["pairs"]:  # the operator's per-pair counts, also on /elo
        assert f"<td>{p['question']}</td><td>{p['model_a']}</td><td>{p['model_b']}</td><td>{p['n']}</td>" in page
    assert sorted(frame.groupby(["question", "model_a", "model_b"]).size().tolist()) == sorted(
        p["n"] for p in counts["pairs"] if p["n"]
    )


def test_a_real_sweep_with_saved_images_is_served_pixel_exact(tmp_path, monkeypatch):
    """The layout written by `run_sweep(save_images=...)` itself (the fake engine of the sweep tests);
    the served PNGs decode to the images regress reads from the same run (another reader)."""
    import test_sweep

    from glide_eval.regress.images import load_run_images
    from glide_eval.sweep.config import load_config
    from glide_eval.sweep.run import run_sweep

    monkeypatch.chdir(tmp_path)
    for fmt in ("npz", "png"):
        config = load_config(
            test_sweep.write_config(tmp_path, name=f"{fmt}.toml", n=7, shard_size=4, batch_size=3, clip="[]"),
            {"run": {"output_dir": f"out-{fmt}"}},
        )
        run_sweep(config, save_images=fmt, progress=False, log=lambda msg: None)
        catalog = build_catalog([config.output_dir])
        assert catalog.models == ["unguided", "cfg:1", "cfg:3"] and len(catalog.captions) == 7
        with JudgmentStore(tmp_path / f"{fmt}.csv") as store:
            app = JudgeApp(catalog, store, ["photorealism"])
            client = TestClient(app.app)
            for setting in ("unguided", "cfg-1", "cfg-3"):
                expected = load_run_images(config.output_dir, setting, 7)
                for sid in range(7):
                    res = client.get(app.image_url(f"out-{fmt}/{setting}/{sid:06d}"))
                    decoded = np.asarray(Image.open(io.BytesIO(res.content)).convert("RGB")).transpose(2, 0, 1)
                    np.testing.assert_array_equal(decoded, expected[sid])
