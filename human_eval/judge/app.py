"""The judging web app (Starlette): one page, a small JSON API, images, and the Elo table.

    GET  /                 the page (judge.html: plain HTML + vanilla JS)
    GET  /api/config       questions with their wording, target, undo window
    POST /api/next         {"rater_id"} -> a trial (caption, two image URLs, signed fields)
    POST /api/answer       the trial's fields + "answer": left|right|tie -> written, fsynced
    POST /api/undo         {"rater_id", "judgment_id"} -> the rater's last judgment removed
    GET  /api/pairs        judgments per (question, pair)
    GET  /elo              current Elo table (the CSV read back by human_eval, as `glide-eval elo`)
    GET  /image/{token}.png  an image of the catalog, only from inside its run directory

Raters are blind to the settings: a trial names its pair by index and its images by opaque
tokens (an HMAC of the image id), never by model or setting name. A trial's fields come back
with the answer, signed (HMAC-SHA256 with a key kept beside the CSV in ``FILE.key``; the
signature covers the pair's model names), so a restarted server accepts answers to trials it
handed out before a crash, and nothing else (not even if the pair indices changed); the
``trial_id`` becomes the CSV's ``judgment_id``, so an answer sent twice is written once.
Every field is checked; a bad request gets a 4xx with a message and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import io
import json
import os
import re
import secrets
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from human_eval.elo import analyze
from human_eval.fit import FitError
from human_eval.judge.catalog import Catalog, ImageEntry
from human_eval.judge.scheduler import Scheduler
from human_eval.judge.store import JudgmentStore, utc_timestamp
from human_eval.judgments import JudgmentError, read_judgments

# GLIDE appendix A.1 asks raters about photorealism and caption similarity, ties allowed
QUESTIONS = {
    "photorealism": "Which image is more photorealistic?",
    "caption": "Which image matches the caption better?",
}
MAX_BODY = 4096
UNDO_S = 30.0
RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TRIAL_ID = re.compile(r"^[0-9a-f]{32}$")
ANSWER_KEYS = {"trial_id", "rater_id", "question", "pair", "prompt_id", "left", "signature", "answer"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def load_key(path: Path) -> bytes:
    """The signing key in ``path`` (created with 32 random bytes, mode 0600, when absent)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 16:
            raise ValueError(f"{path}: key too short; delete the file to make a new one") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def sign(key: bytes, trial: dict) -> str:
    text = "\x1f".join(str(trial[k]) for k in ("trial_id", "question", "model_a", "model_b", "prompt_id", "left"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


async def read_json(request: Request) -> dict:
    """The request's JSON object; 415 / 413 / 400 otherwise. Reads at most MAX_BODY bytes."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(400, f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    return data


def rater_of(data: dict) -> str:
    rater = data.get("rater_id")
    if not isinstance(rater, str) or not RATER.match(rater):
        raise BadRequest(
            400, "rater_id must be 1-64 characters: letters, digits, _ . @ - (starting with a letter or digit)"
        )
    return rater


def png_bytes(entry: ImageEntry) -> bytes:
    """The image's PNG bytes; BadRequest 403 when its real path leaves its run directory."""
    root = os.path.realpath(entry.root)
    real = os.path.realpath(entry.path)
    if os.path.commonpath([root, real]) != root:
        raise BadRequest(403, "image path leaves the run directory")
    if entry.index is None:
        with open(real, "rb") as f:
            return f.read()
    return _npz_png(real, entry.index, os.stat(real).st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _npz_png(path: str, index: int, mtime_ns: int) -> bytes:
    from PIL import Image

    with np.load(path) as f:
        image = f["images"][index]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


class JudgeApp:
    """State of one session: catalog, store, scheduler, signing key; `app` is the ASGI app."""

    def __init__(
        self,
        catalog: Catalog,
        store: JudgmentStore,
        questions: list[str],
        adaptive: bool = False,
        seed: int = 0,
        target: int = 200,
        key: bytes | None = None,
    ):
        unknown = [q for q in questions if q not in QUESTIONS]
        if unknown or not questions:
            raise ValueError(f"unknown question(s) {unknown}; known: {', '.join(QUESTIONS)}")
        self.catalog, self.store, self.questions, self.target = catalog, store, list(questions), target
        self.key = key if key is not None else load_key(Path(f"{store.path}.key"))
        self.scheduler = Scheduler(catalog.models, self.questions, catalog.pair_prompts(), adaptive, seed)
        self.tokens = {
            i: hmac.new(self.key, f"image\x1f{i}".encode(), hashlib.sha256).hexdigest()[:32] for i in catalog.by_id
        }
        self.by_token = {t: catalog.by_id[i] for i, t in self.tokens.items()}
        self.lock = threading.Lock()
        for row in store.rows():
            self.scheduler.record(
                row["question"], row["model_a"], row["model_b"], row["winner"], int(row["prompt_id"]), row["rater_id"]
            )
        self.app = Starlette(
            routes=[
                Route("/", self.page),
                Route("/api/config", self.config),
                Route("/api/next", self.next, methods=["POST"]),
                Route("/api/answer", self.answer, methods=["POST"]),
                Route("/api/undo", self.undo, methods=["POST"]),
                Route("/api/pairs", self.pairs),
                Route("/elo", self.elo),
                Route("/image/{token:path}", self.image),
            ],
            exception_handlers={BadRequest: self._bad_request},
        )

    @staticmethod
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    # ------------------------------------------------------------ pages

    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(resources.files("human_eval.judge").joinpath("judge.html").read_text(encoding="utf-8"))

    async def config(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "questions": {q: QUESTIONS[q] for q in self.questions},
                "target": self.target,
                "undo_s": UNDO_S,
                "models": len(self.catalog.models),
            }
        )

    async def pairs(self, request: Request) -> JSONResponse:
        with self.lock:
            return JSONResponse({"pairs": self.scheduler.pair_table(), "judgments": len(self.store)})

    def image(self, request: Request) -> Response:
        token = request.path_params["token"]
        entry = self.by_token.get(token[:-4]) if token.endswith(".png") else None
        if entry is None:
            raise BadRequest(404, f"no image {token!r} in this session")
        try:
            data = png_bytes(entry)
        except OSError as e:
            raise BadRequest(404, f"image {token!r} cannot be read: {e.strerror or e}") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------ trials

    def trial_json(self, rater: str, trial_id: str) -> dict:
        t = self.scheduler.next_trial(rater, trial_id)
        a, b = self.scheduler.pairs[t.pair]
        fields = {
            "trial_id": trial_id,
            "question": t.question,
            "model_a": self.catalog.models[a],
            "model_b": self.catalog.models[b],
            "prompt_id": t.prompt_id,
            "left": "a" if t.left_is_a else "b",
        }
        return self.present(fields, rater)

    def image_url(self, image_id: str) -> str:
        return f"/image/{self.tokens[image_id]}.png"

    def present(self, fields: dict, rater: str) -> dict:
        """What the page needs to show a trial: no model or setting names (raters judge blind)."""
        a, b = (self.catalog.images[fields[m]][fields["prompt_id"]] for m in ("model_a", "model_b"))
        left, right = (a, b) if fields["left"] == "a" else (b, a)
        public = {
            "trial_id": fields["trial_id"],
            "question": fields["question"],
            "pair": self.scheduler.pair_of(fields["model_a"], fields["model_b"])[0],
            "prompt_id": fields["prompt_id"],
            "left": fields["left"],
            "signature": sign(self.key, fields),
        }
        return {
            "trial": public,
            "caption": self.catalog.captions[fields["prompt_id"]],
            "question_text": QUESTIONS[fields["question"]],
            "left_image": self.image_url(left.image_id),
            "right_image": self.image_url(right.image_id),
            **self.progress(rater, fields),
        }

    def progress(self, rater: str, fields: dict) -> dict:
        found = self.scheduler.pair_of(fields["model_a"], fields["model_b"])
        pair_n = int(self.scheduler.counts[fields["question"]][found[0]].sum()) if found else 0
        rows = self.store.rows()
        return {
            "done": len(rows),
            "target": self.target,
            "pair_judgments": pair_n,
            "rater_done": sum(r["rater_id"] == rater for r in rows),
        }

    async def next(self, request: Request) -> JSONResponse:
        rater = rater_of(await read_json(request))
        with self.lock:
            return JSONResponse(self.trial_json(rater, secrets.token_hex(16)))

    def check_trial(self, data: dict) -> dict:
        """The trial fields of an answer, verified; BadRequest naming the first bad field."""
        extra, missing = set(data) - ANSWER_KEYS, ANSWER_KEYS - set(data)
        if extra or missing:
            raise BadRequest(400, f"unknown field(s) {sorted(extra)}, missing field(s) {sorted(missing)}")
        rater_of(data)
        if not isinstance(data["trial_id"], str) or not TRIAL_ID.match(data["trial_id"]):
            raise BadRequest(400, "trial_id must be 32 lowercase hex digits")
        if data["question"] not in self.questions:
            raise BadRequest(400, f"unknown question {data['question']!r}; this session asks {self.questions}")
        pair = data["pair"]
        if not isinstance(pair, int) or isinstance(pair, bool) or not 0 <= pair < len(self.scheduler.pairs):
            raise BadRequest(404, f"unknown pair id {pair!r} (this session has {len(self.scheduler.pairs)} pairs)")
        model_a, model_b = (self.catalog.models[k] for k in self.scheduler.pairs[pair])
        prompt = data["prompt_id"]
        if (
            not isinstance(prompt, int)
            or isinstance(prompt, bool)
            or prompt not in self.catalog.captions
            or prompt not in self.catalog.images[model_a]
            or prompt not in self.catalog.images[model_b]
        ):
            raise BadRequest(404, f"unknown prompt_id {prompt!r} for this pair")
        if data["left"] not in ("a", "b"):
            raise BadRequest(400, f"left must be 'a' or 'b', got {data['left']!r}")
        if data["answer"] not in ("left", "right", "tie"):
            raise BadRequest(400, f"answer must be 'left', 'right' or 'tie', got {data['answer']!r}")
        fields = {
            "trial_id": data["trial_id"],
            "question": data["question"],
            "model_a": model_a,
            "model_b": model_b,
            "prompt_id": prompt,
            "left": data["left"],
        }
        if not isinstance(data["signature"], str) or not hmac.compare_digest(sign(self.key, fields), data["signature"]):
            raise BadRequest(400, "the trial was not handed out by this session (bad signature)")
        return fields

    def row_of(self, fields: dict, rater: str, answer: str) -> dict:
        left_is_a = fields["left"] == "a"
        winner = "tie" if answer == "tie" else ("a" if (answer == "left") == left_is_a else "b")
        a, b = fields["model_a"], fields["model_b"]
        images = self.catalog.images
        return {
            "model_a": a,
            "model_b": b,
            "winner": winner,
            "question": fields["question"],
            "prompt_id": fields["prompt_id"],
            "rater_id": rater,
            "timestamp": utc_timestamp(),
            "judgment_id": fields["trial_id"],
            "left_model": a if left_is_a else b,
            "right_model": b if left_is_a else a,
            "image_a": images[a][fields["prompt_id"]].image_id,
            "image_b": images[b][fields["prompt_id"]].image_id,
            "seed": self.catalog.seed,
            "caption": " ".join(self.catalog.captions[fields["prompt_id"]].split()),
        }

    async def answer(self, request: Request) -> JSONResponse:
        data = await read_json(request)
        fields = self.check_trial(data)
        rater = data["rater_id"]
        row = self.row_of(fields, rater, data["answer"])
        with self.lock:
            written = self.store.append(row)
            if written:
                self.scheduler.record(
                    row["question"],
                    row["model_a"],
                    row["model_b"],
                    row["winner"],
                    row["prompt_id"],
                    rater,
                    fields["trial_id"],
                )
            return JSONResponse(
                {
                    "status": "recorded" if written else "duplicate",
                    "judgment_id": fields["trial_id"],
                    **self.progress(rater, fields),
                }
            )

    async def undo(self, request: Request) -> JSONResponse:
        data = await read_json(request)
        if set(data) != {"rater_id", "judgment_id"}:
            raise BadRequest(400, "undo takes exactly rater_id and judgment_id")
        rater = rater_of(data)
        if not isinstance(data["judgment_id"], str) or not TRIAL_ID.match(data["judgment_id"]):
            raise BadRequest(400, "judgment_id must be 32 lowercase hex digits")
        with self.lock:
            try:
                row = self.store.remove(data["judgment_id"], rater, UNDO_S)
            except ValueError as e:
                raise BadRequest(409, str(e)) from None
            self.scheduler.forget(
                row["question"], row["model_a"], row["model_b"], row["winner"], int(row["prompt_id"]), rater
            )
            fields = {
                "trial_id": row["judgment_id"],
                "question": row["question"],
                "model_a": row["model_a"],
                "model_b": row["model_b"],
                "prompt_id": int(row["prompt_id"]),
                "left": "a" if row["left_model"] == row["model_a"] else "b",
            }
            return JSONResponse({"status": "undone", **self.present(fields, rater)})

    # ------------------------------------------------------------ Elo

    async def elo(self, request: Request) -> HTMLResponse:
        with self.lock:
            try:
                judgments = read_judgments(self.store.path)
                results = analyze(judgments, rounds=200, seed=0) if len(judgments.frame) else []
                body = (
                    "".join(_ratings_html(r.ratings_table(), r.question) for r in results) or "<p>No judgments yet.</p>"
                )
            except (FitError, JudgmentError) as e:
                body = f"<p>Not enough judgments for finite ratings yet: {html.escape(str(e))}</p>"
            body += _pairs_html(self.scheduler.pair_table())
        return HTMLResponse(
            f"<!doctype html><html><head><meta charset='utf-8'><title>Elo</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;"
            f"text-align:right}}td:first-child{{text-align:left}}</style></head><body>"
            f"<h1>Current Elo ratings</h1><p>{len(self.store)} judgments; ratings sum to 0; "
            f"95% bootstrap intervals (200 rounds). <a href='/'>back to judging</a></p>"
            f"{body}</body></html>"
        )


def _ratings_html(table, question: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(r.model))}</td><td>{r.rating:.0f}</td>"
        f"<td>{r.lower:.0f} to {r.upper:.0f}</td><td>{r.n_judgments}</td></tr>"
        for r in table.itertuples()
    )
    return (
        f"<h2>{html.escape(question)}</h2><table><tr><th>model</th><th>Elo</th><th>95% interval</th>"
        f"<th>judgments</th></tr>{rows}</table>"
    )


def _pairs_html(pairs: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(p['question'])}</td><td>{html.escape(p['model_a'])}</td>"
        f"<td>{html.escape(p['model_b'])}</td><td>{p['n']}</td></tr>"
        for p in pairs
    )
    return (
        f"<h2>Judgments per pair</h2><table><tr><th>question</th><th>model a</th><th>model b</th>"
        f"<th>judgments</th></tr>{rows}</table>"
    )


def run_server(session: JudgeApp, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve ``session`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(session.app, host=host, port=port, log_level="warning", access_log=False)
