"""`glide-eval judge`: run-directory reader, append-only store, pair scheduler, web app (Starlette
TestClient). Every CSV written here is read back with human_eval's own reader."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from judge_runs import CAPTIONS, sample_image, write_run
from PIL import Image
from starlette.testclient import TestClient

from glide_eval.cli import main
from glide_eval.cli.judge import _raters, served_hosts
from glide_eval.judge.images import JudgeImagesError, build_catalog
from human_eval.fit import ELO_PER_NAT, PairCounts, fit_elo, neg_log_likelihood
from human_eval.judge.access import Access, AccessError, token_hash
from human_eval.judge.app import MAX_BODY, JudgeApp, json_depth
from human_eval.judge.app import bind as app_bind
from human_eval.judge.pixels import encode, encoded_length, load_pixels
from human_eval.judge.quality import rater_statistics
from human_eval.judge.scheduler import (
    Scheduler,
    adaptive_choice,
    balanced_choice,
    rating_covariance,
    variance_after_one_more,
)
from human_eval.judge.store import COLUMNS, LEGACY_COLUMNS, JudgmentStore, StoreError, utc_timestamp
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
        "elapsed_ms": 1200,
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

BASE = "http://127.0.0.1:8765"
HOSTS = ["127.0.0.1:8765", "localhost:8765", "[::1]:8765"]
ORIGIN = {"origin": BASE}
NAMES = ("unguided", "cfg:1", "cfg:3", "cfg-1", "cfg-3", "run/")


def open_app(tmp_path, run, **options) -> JudgeApp:
    store = JudgmentStore(tmp_path / "judgments.csv")
    access = Access.open(tmp_path / "judgments.csv.raters.json", ["alice", "bob"])
    options = {"seed": 0, "target": 20, **options}
    return JudgeApp(build_catalog([run]), store, ["photorealism", "caption"], access, HOSTS, **options)


def login(app: JudgeApp, token: str | None) -> TestClient:
    """A browser of its own (cookie jar) that opened the link with ``token``."""
    client = TestClient(app.app, base_url=BASE)
    if token is not None:
        link = "/admin/" if app.access.is_admin(token) else "/r/"
        assert client.get(link + token, follow_redirects=False).status_code == 303
    return client


@pytest.fixture
def session(tmp_path):
    run = write_run(tmp_path)
    app = open_app(tmp_path, run)
    with app, app.store:
        yield app, run


def next_trial(client) -> dict:
    res = client.post("/api/next", json={}, headers=ORIGIN)
    assert res.status_code == 200, res.text
    return res.json()


def answer(client, trial_id, side):
    return client.post("/api/answer", json={"trial_id": trial_id, "answer": side}, headers=ORIGIN)


def test_answers_are_written_in_the_elo_schema_and_raters_see_no_setting(session, tmp_path):
    app, _run = session
    alice = login(app, app.access.issued["alice"])
    expected, lengths = [], set()
    for k in range(12):
        shown = next_trial(alice)
        assert set(shown) == {"trial_id", "caption", "question_text", "left_image", "right_image", "done", "target"}
        t = app.trials[shown["trial_id"]]  # the server's side of the trial
        for url in (shown["left_image"], shown["right_image"]):
            image = alice.get(url)
            assert image.status_code == 200 and image.headers["cache-control"] == "no-store"
            assert "etag" not in image.headers and "last-modified" not in image.headers
            lengths.add(len(image.content))
            assert alice.get(url).status_code == 404  # single use
        text = json.dumps(shown)
        assert not any(name in text for name in NAMES)
        assert shown["caption"] == CAPTIONS[t.prompt_id] and shown["done"] == k
        side = ("left", "right", "tie")[k % 3]
        assert answer(alice, shown["trial_id"], side).json()["status"] == "recorded"
        left_model, right_model = (t.model_a, t.model_b) if t.left == "a" else (t.model_b, t.model_a)
        expected.append((t.trial_id, {"left": left_model, "right": right_model, "tie": "tie"}[side], left_model))
    assert lengths == {encoded_length(32, 32)}  # one size: the length tells nothing
    judgments = read_judgments(app.store.path)
    assert judgments.issues == [] and len(judgments.frame) == 12
    for (jid, winner, left), r in zip(expected, judgments.frame.itertuples()):
        assert r.judgment_id == jid and r.left_model == left and r.rater_id == "alice"
        assert winner == ("tie" if r.winner == "tie" else (r.model_a if r.winner == "a" else r.model_b))
        assert r.image_a == f"run/{r.model_a.replace(':', '-')}/{int(r.prompt_id):06d}"
        assert int(r.elapsed_ms) >= 0
    assert sorted(judgments.frame["question"].value_counts().tolist()) == [6, 6]
    res = CliRunner().invoke(
        main, ["elo", str(app.store.path), "--rounds", "20", "--l2", "0.1", "--out", str(tmp_path / "elo")]
    )
    assert res.exit_code == 0, res.output
    assert "dropped" not in res.output


def test_served_images_decode_to_the_catalog_pixels_with_a_length_set_by_size(session):
    app, run = session
    alice = login(app, app.access.issued["alice"])
    shown = next_trial(alice)
    t = app.trials[shown["trial_id"]]
    left = t.model_a if t.left == "a" else t.model_b
    decoded = np.asarray(Image.open(io.BytesIO(alice.get(shown["left_image"]).content)))
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), sample_image(left.replace(":", "-"), t.prompt_id))
    rng = np.random.default_rng(0)
    for h, w in ((16, 16), (64, 48), (300, 200)):
        flat, noise = np.zeros((h, w, 3), np.uint8), rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert len(encode(flat)) == len(encode(noise)) == encoded_length(w, h)


def test_adaptive_session_asks_only_the_chosen_question(tmp_path):
    run = write_run(tmp_path)
    (tmp_path / "out").mkdir()
    with JudgmentStore(tmp_path / "out/j.csv") as store:
        access = Access.open(tmp_path / "out/j.csv.raters.json", ["alice"])
        with JudgeApp(build_catalog([run]), store, ["caption"], access, HOSTS, adaptive=True, seed=2) as app:
            alice, rng = login(app, access.issued["alice"]), np.random.default_rng(0)
            for _ in range(30):
                shown = next_trial(alice)
                assert shown["question_text"] == "Which image matches the caption better?"
                assert answer(alice, shown["trial_id"], ("left", "right", "tie")[rng.integers(3)]).status_code == 200
    frame = read_judgments(store.path).frame
    assert len(frame) == 30 and set(frame["question"]) == {"caption"}
    assert frame.groupby(["model_a", "model_b"]).size().min() >= 1


def test_json_depth_counts_nesting_outside_strings():
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert json_depth(b'"\\\\"[') == 1 and json_depth(b'"\\"[') == 0 and json_depth(b"[" * 1000) == 1000


def test_bad_requests_get_4xx_and_write_nothing(session):
    app, _run = session
    alice = login(app, app.access.issued["alice"])
    trial_id = next_trial(alice)["trial_id"]
    cases = [
        ({"trial_id": trial_id, "answer": "up"}, 400, "answer must be"),
        ({"trial_id": trial_id, "answer": 1}, 400, "must be strings"),
        ({"trial_id": "x" * 32, "answer": "left"}, 404, "no such trial"),
        ({"trial_id": trial_id, "answer": "left", "rater_id": "bob"}, 400, "expected the field"),
        ({"trial_id": trial_id}, 400, "expected the field"),
    ]
    for data, status, message in cases:
        res = alice.post("/api/answer", json=data, headers=ORIGIN)
        assert res.status_code == status and message in res.json()["error"], (data, res.text)
    json_headers = {**ORIGIN, "content-type": "application/json"}
    for body, status in [
        (b"[" * 1500 + b"]" * 1500, 400),  # 3 KB of nesting: 400, not a RecursionError's 500
        (b'{"trial_id": [[[[["x"]]]]], "answer": "left"}', 400),
        (b"{" + b" " * MAX_BODY + b"}", 413),
        (b"[1]", 400),
        (b"{oops", 400),
    ]:
        assert alice.post("/api/answer", content=body, headers=json_headers).status_code == status, body[:20]
    chunked = alice.post("/api/answer", content=iter([b"{", b" " * MAX_BODY, b"}"]), headers=json_headers)
    assert chunked.status_code == 413
    assert alice.post("/api/answer", data={"answer": "left"}, headers=ORIGIN).status_code == 415
    good = {"trial_id": trial_id, "answer": "left"}
    for headers in ({}, {"origin": "http://evil.example:8765"}, {"origin": "null"}):  # no or another Origin
        res = alice.post("/api/answer", json=good, headers=headers)
        assert res.status_code == 403 and "Origin" in res.json()["error"]
    for host in ("evil.example:8765", "evil.example", "127.0.0.1:9999", "127.0.0.1"):  # DNS rebinding
        res = alice.post("/api/answer", json=good, headers={**ORIGIN, "host": host})
        assert res.status_code == 400 and "Host" in res.json()["error"], host
        assert alice.get("/api/config", headers={"host": host}).status_code == 400
        assert res.headers["x-frame-options"] == "DENY" and res.headers["cache-control"] == "no-store"
    assert len(read_judgments(app.store.path).frame) == 0 and len(app.checks) == 0
    assert answer(alice, trial_id, "left").json()["status"] == "recorded"  # the same answer, done right


def test_raters_answer_and_undo_only_their_own_trials_once(session):
    app, _run = session
    alice, bob, nobody = login(app, app.access.issued["alice"]), login(app, app.access.issued["bob"]), login(app, None)
    mine = next_trial(alice)
    assert nobody.post("/api/next", json={}, headers=ORIGIN).status_code == 401
    assert nobody.get("/api/config").status_code == 401
    assert login(app, None).get("/r/" + "x" * 32, follow_redirects=False).status_code == 403
    res = answer(bob, mine["trial_id"], "left")  # bob answering alice's trial
    assert res.status_code == 403 and "another rater" in res.json()["error"]
    assert bob.get(mine["left_image"]).status_code == 404  # nor may he see its images
    assert answer(alice, mine["trial_id"], "left").json()["status"] == "recorded"
    assert answer(alice, mine["trial_id"], "left").json()["status"] == "duplicate"  # a resend: written once
    res = answer(alice, mine["trial_id"], "right")  # a second, different answer
    assert res.status_code == 409 and "answered already" in res.json()["error"]
    res = bob.post("/api/undo", json={"judgment_id": mine["trial_id"]}, headers=ORIGIN)  # bob undoing it
    assert res.status_code == 403
    assert answer(bob, mine["trial_id"], "right").status_code == 403
    rows = read_judgments(app.store.path).frame
    assert len(rows) == 1 and rows["rater_id"].tolist() == ["alice"] and rows["left_model"][0]
    assert next_trial(alice)["trial_id"] == next_trial(alice)["trial_id"]  # the open trial, not a new one
    config = alice.get("/api/config").json()
    assert config["rater"] == "alice" and config["done"] == 1


def test_undo_then_restart_accepts_trials_handed_out_before(session, tmp_path):
    app, run = session
    alice = login(app, app.access.issued["alice"])
    first = next_trial(alice)
    jid = answer(alice, first["trial_id"], "left").json()["judgment_id"]
    undone = alice.post("/api/undo", json={"judgment_id": jid}, headers=ORIGIN)
    assert undone.status_code == 200 and undone.json()["trial_id"] == first["trial_id"]
    assert undone.json()["left_image"] != first["left_image"]  # fresh single-use addresses
    assert alice.post("/api/undo", json={"judgment_id": jid}, headers=ORIGIN).status_code == 409
    assert len(read_judgments(app.store.path).frame) == 0
    assert answer(alice, first["trial_id"], "right").json()["status"] == "recorded"  # answered again, once
    pending = next_trial(alice)
    tokens = dict(app.access.issued)
    app.close()
    app.store.close()  # "restart": a new app on the same files, the same links
    with JudgmentStore(app.store.path) as store:
        access = Access.open(tmp_path / "judgments.csv.raters.json", ["alice", "bob"])
        assert access.issued == {}  # links issued before still work; none printed again
        with JudgeApp(build_catalog([run]), store, ["photorealism", "caption"], access, HOSTS) as again:
            alice2, bob2 = login(again, tokens["alice"]), login(again, tokens["bob"])
            assert answer(alice2, first["trial_id"], "right").json()["status"] == "duplicate"
            assert answer(bob2, pending["trial_id"], "tie").status_code == 403
            assert answer(alice2, pending["trial_id"], "tie").json()["status"] == "recorded"  # handed out before
            rng = np.random.default_rng(5)
            for _ in range(40):
                t = next_trial(bob2)
                answer(bob2, t["trial_id"], ("left", "right", "tie")[rng.integers(3)])
            admin = login(again, tokens["admin"])
            page = admin.get("/elo").text
            counts = admin.get("/api/admin").json()
        frame = read_judgments(store.path).frame
    assert len(frame) == 42 and frame["judgment_id"].is_unique
    assert frame["rater_id"].value_counts().to_dict() == {"bob": 40, "alice": 2}
    assert counts["judgments"] == 42 and sum(p["n"] for p in counts["pairs"]) == 42
    assert [r["rater"] for r in counts["raters"]] == ["alice", "bob"]
    assert "Elo: photorealism" in page and "Not enough" not in page
    assert all(f"<td>{m}</td>" in page for m in ("unguided", "cfg:1", "cfg:3"))
    for p in counts["pairs"]:
        assert f"<td>{p['question']}</td><td>{p['model_a']}</td><td>{p['model_b']}</td><td>{p['n']}</td>" in page


def test_results_need_the_admin_link_and_the_rater_page_never_links_them(session, tmp_path):
    app, _run = session
    alice, nobody = login(app, app.access.issued["alice"]), login(app, None)
    for client in (alice, nobody):
        for path in ("/elo", "/admin", "/api/admin"):
            res = client.get(path)
            assert res.status_code == 403 and "admin link" in res.json()["error"], path
    assert nobody.get("/admin/" + app.access.issued["alice"], follow_redirects=False).status_code == 403
    rater_files = [alice.get(p).text for p in ("/", "/judge.js", "/judge.css")]
    assert not any(word in text for text in rater_files for word in ("/elo", "/admin", "/api/pairs"))
    admin = login(app, app.access.issued["admin"])
    assert admin.get("/elo").status_code == 200 and admin.get("/api/admin").json()["judgments"] == 0
    # secrets: only hashes, beside the CSV (not in the run directory)
    stored = (tmp_path / "judgments.csv.raters.json").read_text()
    assert all(token not in stored for token in app.access.issued.values())
    assert token_hash(app.access.issued["bob"]) in stored
    assert oct((tmp_path / "judgments.csv.raters.json").stat().st_mode & 0o777) == "0o600"


def test_only_regular_catalog_files_inside_the_run_are_served(tmp_path):
    run = write_run(tmp_path)
    (tmp_path / "secret.png").write_bytes((run / "images/unguided/000001.png").read_bytes())
    (run / "images/cfg-3/000003.png").unlink()
    os.link(tmp_path / "secret.png", run / "images/cfg-3/000003.png")  # a hard link to a file outside
    (run / "images/cfg-3/000004.png").unlink()
    os.symlink(run / "config.toml", run / "images/cfg-3/000004.png")  # a symlink to a run file, not an image
    (run / "images/cfg-3/000005.png").unlink()
    os.symlink(tmp_path / "secret.png", run / "images/cfg-3/000005.png")  # a symlink out of the run
    (run / "images/unguided/000000.png").write_bytes(b"not an image")
    os.link(run / "images/cfg-1/00001_000004.npz", tmp_path / "copy.npz")  # both names now have 2 links
    (tmp_path / "out").mkdir()
    app = open_app(tmp_path / "out", run)
    with app, app.store:
        refused = "\n".join(app.refused)
        assert len(app.refused) == 6, refused
        assert refused.count("00001_000004.npz: has 2 hard links") == 2  # its samples 4 and 5
        assert sorted(app.catalog.images["cfg:1"]) == [0, 1, 2, 3]
        assert "000003.png: has 2 hard links" in refused and "000005.png: its real path" in refused
        assert "000004.png: not a readable PNG" in refused and "000000.png: not a readable PNG" in refused
        assert 3 not in app.catalog.images["cfg:3"] and 0 not in app.catalog.images["unguided"]
        alice = login(app, app.access.issued["alice"])
        for _ in range(30):  # the images left out are never shown
            t = app.trials[next_trial(alice)["trial_id"]]
            assert (t.prompt_id not in (3, 4, 5)) or "cfg:3" not in (t.model_a, t.model_b)
            answer(alice, t.trial_id, "tie")
        shown = next_trial(alice)
        t = app.trials[shown["trial_id"]]
        for model in (t.model_a, t.model_b):  # links made after the start are refused when served
            path = app.catalog.images[model][t.prompt_id].path
            if path.suffix == ".png":
                path.unlink()
                os.link(tmp_path / "out" / "judgments.csv.raters.json", path)
        for url in (shown["left_image"], shown["right_image"]):
            res = alice.get(url)
            if res.status_code == 200:
                Image.open(io.BytesIO(res.content)).load()  # an npz image: still the pixels
            else:
                assert res.status_code == 404 and b"admin" not in res.content
        for url in ["/img/../../secret.png", "/img/%2e%2e/%2e%2e/secret.png", "/image/run/config.toml"]:
            res = alice.get(url)
            assert 400 <= res.status_code < 500 and b"model_a" not in res.content, url


def test_attention_checks_and_repeats_are_recorded_apart_and_counted(tmp_path):
    run = write_run(tmp_path)
    (tmp_path / "out").mkdir()
    app = open_app(tmp_path / "out", run, attention_rate=0.3, repeat_rate=0.3, seed=4)
    with app, app.store:
        alice = login(app, app.access.issued["alice"])
        kinds = Counter()
        for _ in range(60):
            shown = next_trial(alice)
            t = app.trials[shown["trial_id"]]
            kinds[t.kind] += 1
            if t.kind == "attention":
                assert t.model_a == t.model_b
                a, b = (alice.get(shown[k]).content for k in ("left_image", "right_image"))
                assert a == b
            answer(alice, t.trial_id, "tie" if t.kind == "attention" else "left")
        assert kinds["attention"] > 5 and kinds["repeat"] > 5 and kinds["pair"] > 20
        checks = app.checks.rows()
        assert len(checks) == kinds["attention"] + kinds["repeat"]
        assert len(read_judgments(app.store.path).frame) == kinds["pair"]  # checks stay out of the fit
        admin = login(app, app.access.issued["admin"])
        stats = admin.get("/api/admin").json()["raters"][0]
        assert stats["attention_passed"] == stats["attention_total"] == kinds["attention"]
        assert stats["answers"] == 60 and stats["repeats"] == kinds["repeat"]
        assert "Raters" in admin.get("/admin").text


def test_rater_statistics_count_attention_repeats_and_majority():
    def j(jid, rater, winner, a="x", b="y", q="caption"):
        return {
            "judgment_id": jid,
            "rater_id": rater,
            "winner": winner,
            "model_a": a,
            "model_b": b,
            "question": q,
            "elapsed_ms": "1500",
        }

    judgments = [j("1", "r1", "a"), j("2", "r2", "a"), j("3", "r3", "b"), j("4", "r3", "tie"), j("5", "r1", "a")]
    checks = [
        {"judgment_id": "6", "rater_id": "r3", "kind": "attention", "winner": "a", "repeat_of": "", "elapsed_ms": ""},
        {"judgment_id": "7", "rater_id": "r3", "kind": "attention", "winner": "tie", "repeat_of": "", "elapsed_ms": ""},
        {"judgment_id": "8", "rater_id": "r1", "kind": "repeat", "winner": "a", "repeat_of": "1", "elapsed_ms": "500"},
        {"judgment_id": "9", "rater_id": "r3", "kind": "repeat", "winner": "a", "repeat_of": "3", "elapsed_ms": ""},
    ]
    stats = {s.rater: s for s in rater_statistics(judgments, checks)}
    assert (stats["r1"].judgments, stats["r1"].answers, stats["r1"].median_s) == (2, 3, 1.5)
    assert (stats["r1"].consistent, stats["r1"].repeats) == (1, 1)
    assert (stats["r3"].consistent, stats["r3"].repeats, stats["r3"].attention) == (0, 1, 0.5)
    # r1's two wins for x against others' x (r2) 1 : y (r3) 1 -> split: not counted; r3's y win vs x 3 : 0
    assert (stats["r1"].agree, stats["r1"].compared) == (0, 0)
    assert (stats["r2"].agree, stats["r2"].compared) == (1, 1) and (stats["r3"].agree, stats["r3"].compared) == (0, 1)
    assert not any(s.flags for s in stats.values())  # too little evidence to flag anyone
    checks += [dict(checks[0], judgment_id=str(k)) for k in range(10, 13)]
    assert rater_statistics(judgments, checks)[2].flags == ["attention 1/5"]


def test_links_secrets_and_network_options_of_the_cli(tmp_path):
    run = write_run(tmp_path)
    out = tmp_path / "j.csv"
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(out), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "needs --raters" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(run / "j.csv")])
    assert res.exit_code == 2 and "inside the run directory" in res.output
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(out), "--questions", "beauty"])
    assert res.exit_code == 2 and "unknown beauty" in res.output
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(out), "--settings", "cfg:3"])
    assert res.exit_code == 1 and "need two settings" in res.output and not out.exists()
    with pytest.raises(AccessError, match="rater name"):
        Access.open(tmp_path / "a.json", ["ok", "not ok"])
    first = Access.open(tmp_path / "a.json", ["alice", "bob"])
    assert set(first.issued) == {"alice", "bob", "admin"}
    again = Access.open(tmp_path / "a.json", ["alice", "carol"])  # bob's link revoked, carol's made
    assert set(again.issued) == {"carol"} and again.rater_of(first.issued["alice"]) == "alice"
    assert again.rater_of(first.issued["bob"]) is None and again.is_admin(first.issued["admin"])
    renewed = Access.open(tmp_path / "a.json", ["alice"], new_links=True)
    assert renewed.rater_of(first.issued["alice"]) is None and not renewed.is_admin(first.issued["admin"])
    hosts, bases = served_hosts("0.0.0.0", 8765)
    assert "127.0.0.1:8765" in hosts and "0.0.0.0:8765" not in hosts and not bases[0].startswith("http://0.0.0.0")
    names = tmp_path / "raters.txt"
    names.write_text("# our raters\nalice\n\nbob  # second\n")
    assert _raters(str(names)) == ["alice", "bob"] and _raters("x, y") == ["x", "y"]


def test_legacy_judgment_files_are_appended_to_in_their_own_columns(tmp_path):
    path = tmp_path / "old.csv"
    old = {k: v for k, v in row(1).items() if k != "elapsed_ms"}
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([LEGACY_COLUMNS, [old[c] for c in LEGACY_COLUMNS]])
    with JudgmentStore(path) as store:
        assert store.columns == LEGACY_COLUMNS
        assert store.append(row(2, elapsed_ms=5))
    frame = read_judgments(path).frame
    assert len(frame) == 2 and "elapsed_ms" not in frame.columns


def test_elo_exclude_raters_drops_their_rows_and_records_it(tmp_path):
    path = tmp_path / "j.csv"
    rng = np.random.default_rng(0)
    models = ["m0", "m1", "m2"]
    lines = ["model_a,model_b,winner,rater_id"]
    for k in range(300):
        a, b = rng.choice(3, 2, replace=False)
        rater = "clicker" if k % 5 == 0 else f"r{k % 3}"
        winner = rng.choice(["a", "b", "tie"]) if rater == "clicker" else ("a" if a > b else "b")
        if rng.random() < 0.2 and rater != "clicker":
            winner = "b" if winner == "a" else "a"
        lines.append(f"{models[a]},{models[b]},{winner},{rater}")
    path.write_text("\n".join(lines) + "\n")
    kept = tmp_path / "kept.csv"
    kept.write_text("\n".join([lines[0]] + [x for x in lines[1:] if not x.endswith(",clicker")]) + "\n")
    runs = {}
    for name, args in {"excluded": [str(path), "--exclude-raters", "clicker,nobody"], "filtered": [str(kept)]}.items():
        res = CliRunner().invoke(main, ["elo", *args, "--rounds", "0", "--json", "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(res.stdout)
        if name == "excluded":
            assert "no judgments by nobody" in res.stderr
    assert runs["excluded"]["questions"][0]["ratings"] == runs["filtered"]["questions"][0]["ratings"]
    options = json.loads((tmp_path / "excluded/provenance.json").read_text())["options"]
    assert options["exclude_raters"] == ["clicker", "nobody"] and options["excluded_rows"] == {
        "clicker": 60,
        "nobody": 0,
    }
    no_raters = tmp_path / "plain.csv"
    no_raters.write_text("model_a,model_b,winner\nx,y,a\n")
    res = CliRunner().invoke(main, ["elo", str(no_raters), "--exclude-raters", "a"])
    assert res.exit_code == 1 and "no rater_id column" in res.output


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
        for setting in ("unguided", "cfg-1", "cfg-3"):
            expected = load_run_images(config.output_dir, setting, 7)
            model = {"unguided": "unguided", "cfg-1": "cfg:1", "cfg-3": "cfg:3"}[setting]
            for sid in range(7):
                sent = encode(load_pixels(catalog.images[model][sid]))  # what a rater's browser receives
                decoded = np.asarray(Image.open(io.BytesIO(sent)).convert("RGB")).transpose(2, 0, 1)
                np.testing.assert_array_equal(decoded, expected[sid])


def test_a_restart_with_fewer_settings_retires_the_trials_it_no_longer_shows(tmp_path):
    run = write_run(tmp_path)
    (tmp_path / "out").mkdir()
    app = open_app(tmp_path / "out", run, seed=3)
    with app, app.store:
        alice = login(app, app.access.issued["alice"])
        while "cfg:1" not in (t := app.trials[next_trial(alice)["trial_id"]]).model_a + t.model_b:
            answer(alice, t.trial_id, "tie")
        token = app.access.issued["alice"]
    with JudgmentStore(app.store.path) as store:
        access = Access.open(tmp_path / "out/judgments.csv.raters.json", ["alice"])
        catalog = build_catalog([run], ["unguided", "cfg:3"])
        with JudgeApp(catalog, store, ["photorealism", "caption"], access, HOSTS) as again:
            alice = login(again, token)
            res = answer(alice, t.trial_id, "left")
            assert res.status_code == 410 and "no longer" in res.json()["error"]
            fresh = next_trial(alice)
            assert fresh["trial_id"] != t.trial_id and answer(alice, fresh["trial_id"], "left").status_code == 200


def test_the_cli_names_refused_images_and_prints_real_addresses_and_links(tmp_path, monkeypatch):
    import glide_eval.cli.judge as cli

    served = []
    monkeypatch.setattr(cli, "run_server", lambda session, sock: served.append(session))
    monkeypatch.setattr(cli, "bind", lambda host, port: app_bind("127.0.0.1", 0))  # nothing listens beyond
    run = write_run(tmp_path)
    (run / "images/unguided/000002.png").write_bytes(b"broken")
    out = tmp_path / "j.csv"
    res = CliRunner().invoke(main, ["judge", str(run), "--out", str(out), "--host", "0.0.0.0", "--raters", "a,b"])
    assert res.exit_code == 0, res.output
    assert "left out: " in res.stderr and "000002.png: not a readable PNG" in res.stderr
    assert "1 image(s) left out before the first trial" in res.stderr
    links = re.findall(r"^rater (\w+): (http://\S+)$", res.stdout, re.M)
    assert [name for name, _ in links] == ["a", "b"] and "admin" in res.stdout
    assert not any("0.0.0.0" in link for _, link in links) and "reachable as" in res.stderr
    assert 2 not in served[0].catalog.images["unguided"]
    again = CliRunner().invoke(main, ["judge", str(run), "--out", str(out), "--raters", "a,b"])
    assert "rater a: link issued before" in again.stdout
