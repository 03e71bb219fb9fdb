"""The judging web app (Starlette): a rater page, a small JSON API, images, an admin page.

    GET  /r/TOKEN          a rater's private link: sets the rater cookie, then shows the page
    GET  /admin/TOKEN      the admin link: sets the admin cookie, then shows /admin
    GET  /                 the page (judge.html, judge.js, judge.css: plain HTML + vanilla JS)
    GET  /api/config       the rater's name, questions, undo window, target
    POST /api/next         {} -> the rater's open trial: caption, question, two single-use image URLs
    POST /api/answer       {"trial_id", "answer": left|right|tie} -> written, fsynced
    POST /api/undo         {"judgment_id"} -> the rater's last answer removed, its trial shown again
    GET  /img/TOKEN        one image of an open trial, once
    GET  /admin, /elo      (admin) progress per pair, per-rater statistics, Elo tables
    GET  /api/admin        (admin) the same as JSON

Blind by construction: a rater receives a random trial id, the caption, the question and two
image URLs made of random tokens, each good for one request by that rater; the images are
decoded and re-encoded (`pixels.encode`) so their length depends on the resolution alone, every
response is ``Cache-Control: no-store``, and no image is cached by the server either. Which
settings, pair and sides a trial shows stays on the server, in ``FILE.trials.jsonl`` (so a
restarted server accepts answers to trials it handed out before).

Authenticated: the rater is the one whose link set the cookie (`access.Access`); a trial can be
answered and undone only by the rater it was handed to, and is answered at most once (an answer
sent again is acknowledged and not written; a different second answer is refused).

Network: every request must name one of the served addresses in its Host header (a DNS
rebinding page cannot), and every POST must come from a page of that address (Origin);
responses carry a CSP allowing only this origin, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``. Bodies are JSON objects of at most ``MAX_BODY`` bytes and
``MAX_DEPTH`` levels; a bad request gets a 4xx with a message (never naming a setting) and
writes nothing.

Quality control (optional): ``attention_rate`` of trials show one image on both sides,
``repeat_rate`` show a pair the rater judged before with the sides swapped; their answers go to
``FILE.checks.csv`` (not into the fit) and feed `quality.rater_statistics` on the admin page.
"""

from __future__ import annotations

import html
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from human_eval.elo import analyze
from human_eval.fit import FitError
from human_eval.judge.access import Access
from human_eval.judge.catalog import Catalog
from human_eval.judge.pixels import ImageRefused, check_catalog, encode, load_pixels
from human_eval.judge.quality import rater_statistics
from human_eval.judge.scheduler import Scheduler
from human_eval.judge.store import CHECK_COLUMNS, JudgmentStore, StoreError, TrialLog, utc_timestamp
from human_eval.judgments import JudgmentError, read_judgments

# GLIDE appendix A.1 asks raters about photorealism and caption similarity, ties allowed
QUESTIONS = {
    "photorealism": "Which image is more photorealistic?",
    "caption": "Which image matches the caption better?",
}
MAX_BODY = 4096
MAX_DEPTH = 4
UNDO_S = 30.0
RATER_COOKIE, ADMIN_COOKIE = "judge_rater", "judge_admin"
TRIAL_ID_LENGTH = 32
REPEAT_GAP = 3  # a repeated pair is none of the rater's last REPEAT_GAP judgments
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
STATIC = {"/judge.js": "text/javascript", "/judge.css": "text/css"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in ``body`` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def read_json(request: Request, keys: set[str]) -> dict:
    """The request's JSON object with exactly ``keys`` (string values); 415 / 413 / 400 otherwise."""
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
    if json_depth(body) > MAX_DEPTH:
        raise BadRequest(400, f"body nests deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadRequest(400, f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    if set(data) != keys:
        raise BadRequest(400, f"expected the field(s) {sorted(keys)}, got {sorted(map(str, data))}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise BadRequest(400, f"field(s) {bad} must be strings")
    return data


class Guard:
    """ASGI middleware: the Host header must be a served address, POSTs must carry the Origin of
    one, and every response gets the security headers (see the app's docstring)."""

    def __init__(self, app, hosts: list[str]):
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.origins = {f"http://{h}" for h in self.hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = None
        if headers.get("host", "").lower() not in self.hosts:
            problem = (400, "the Host header is not an address this server is served at")
        elif scope["method"] not in ("GET", "HEAD") and headers.get("origin", "").lower() not in self.origins:
            problem = (403, "requests that change anything must come from this server's own page (Origin)")

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if problem is not None:
            response = JSONResponse({"error": problem[1]}, status_code=problem[0])
            return await response(scope, receive, send_secured)
        return await self.app(scope, receive, send_secured)


@dataclass
class Issued:
    """A trial handed to a rater (the server's side; the rater sees only ``trial_id``)."""

    trial_id: str
    rater: str
    kind: str  # pair | attention | repeat
    question: str
    model_a: str
    model_b: str
    prompt_id: int
    left: str  # "a": model_a's image on the left
    issued: float  # time.time()
    repeat_of: str = ""


class JudgeApp:
    """State of one session: catalog, stores, scheduler, links; `app` is the ASGI app."""

    def __init__(
        self,
        catalog: Catalog,
        store: JudgmentStore,
        questions: list[str],
        access: Access,
        hosts: list[str],
        adaptive: bool = False,
        seed: int = 0,
        target: int = 200,
        attention_rate: float = 0.0,
        repeat_rate: float = 0.0,
        progress=None,
    ):
        unknown = [q for q in questions if q not in QUESTIONS]
        if unknown or not questions:
            raise ValueError(f"unknown question(s) {unknown}; known: {', '.join(QUESTIONS)}")
        if not (0 <= attention_rate < 1 and 0 <= repeat_rate < 1 and attention_rate + repeat_rate < 1):
            raise ValueError(f"attention_rate {attention_rate} and repeat_rate {repeat_rate} must sum to less than 1")
        checked = check_catalog(catalog, progress)
        self.catalog, self.refused = checked.catalog, checked.refused
        self.store, self.questions, self.target, self.access = store, list(questions), target, access
        self.attention_rate, self.repeat_rate = attention_rate, repeat_rate
        self.checks = JudgmentStore(Path(f"{store.path}.checks.csv"), CHECK_COLUMNS)
        self.log = TrialLog(Path(f"{store.path}.trials.jsonl"))
        self.scheduler = Scheduler(self.catalog.models, self.questions, self.catalog.pair_prompts(), adaptive, seed)
        self.rng = np.random.default_rng([seed, 1])
        self.lock = threading.Lock()
        self.trials: dict[str, Issued] = {}
        self.current: dict[str, str] = {}  # rater -> trial on their screen
        self.images: dict[str, tuple[str, object]] = {}  # image token -> (rater, entry)
        self.last: dict[str, str] = {}  # rater -> their latest answer (what undo removes)
        for k, record in enumerate(self.log.records, start=1):
            try:
                self.trials[record["trial_id"]] = Issued(**record)
            except TypeError as e:
                raise StoreError(f"{self.log.path}:{k}: not a trial record of this tool ({e})") from None
        for row in store.rows():
            self.scheduler.record(
                row["question"], row["model_a"], row["model_b"], row["winner"], int(row["prompt_id"]), row["rater_id"]
            )
        answers = sorted(store.rows() + self.checks.rows(), key=lambda r: r["timestamp"])
        for row in answers:
            self.last[row["rater_id"]] = row["judgment_id"]
        for t in self.trials.values():
            if not self.answered(t.trial_id) and self.shows(t):
                self.current[t.rater] = t.trial_id
        self.app = Guard(
            Starlette(
                routes=[
                    Route("/", self.page),
                    Route("/judge.js", self.static),
                    Route("/judge.css", self.static),
                    Route("/r/{token}", self.rater_link),
                    Route("/admin/{token}", self.admin_link),
                    Route("/admin", self.admin_page),
                    Route("/elo", self.admin_page),
                    Route("/api/admin", self.admin_json),
                    Route("/api/config", self.config),
                    Route("/api/next", self.next, methods=["POST"]),
                    Route("/api/answer", self.answer, methods=["POST"]),
                    Route("/api/undo", self.undo, methods=["POST"]),
                    Route("/img/{token}", self.image),
                ],
                exception_handlers={BadRequest: self._bad_request},
            ),
            hosts,
        )

    def close(self) -> None:
        self.checks.close()

    def __enter__(self) -> JudgeApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    # ------------------------------------------------------------ who is asking

    def rater(self, request: Request) -> str:
        rater = self.access.rater_of(request.cookies.get(RATER_COOKIE))
        if rater is None:
            raise BadRequest(401, "open your personal judging link first")
        return rater

    def admin(self, request: Request) -> None:
        if not self.access.is_admin(request.cookies.get(ADMIN_COOKIE)):
            raise BadRequest(403, "this page needs the admin link")

    @staticmethod
    def _login(token: str, cookie: str, to: str) -> Response:
        response = RedirectResponse(to, status_code=303)
        response.set_cookie(cookie, token, httponly=True, samesite="strict", path="/")
        return response

    async def rater_link(self, request: Request) -> Response:
        token = request.path_params["token"]
        if self.access.rater_of(token) is None:
            raise BadRequest(403, "this link is not (or no longer) a judging link of this session")
        return self._login(token, RATER_COOKIE, "/")

    async def admin_link(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not self.access.is_admin(token):
            raise BadRequest(403, "this link is not the admin link of this session")
        return self._login(token, ADMIN_COOKIE, "/admin")

    # ------------------------------------------------------------ the rater's page

    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(resources.files("human_eval.judge").joinpath("judge.html").read_text(encoding="utf-8"))

    async def static(self, request: Request) -> Response:
        path = request.url.path
        text = resources.files("human_eval.judge").joinpath(path.lstrip("/")).read_text(encoding="utf-8")
        return Response(text, media_type=STATIC[path])

    async def config(self, request: Request) -> JSONResponse:
        rater = self.rater(request)
        return JSONResponse(
            {
                "rater": rater,
                "questions": {q: QUESTIONS[q] for q in self.questions},
                "undo_s": UNDO_S,
                "target": self.target,
                "done": self.done(rater),
            }
        )

    def image(self, request: Request) -> Response:
        rater = self.rater(request)
        with self.lock:
            owner, entry = self.images.pop(request.path_params["token"], (None, None))
        if owner != rater:
            raise BadRequest(404, "no such image (each image address serves one request)")
        try:
            data = encode(load_pixels(entry))
        except ImageRefused as e:
            print(f"judge: not served: {e}", file=sys.stderr, flush=True)
            raise BadRequest(404, "this image cannot be shown") from None
        return Response(data, media_type="image/png")

    # ------------------------------------------------------------ trials

    def shows(self, t: Issued) -> bool:
        """Whether trial ``t`` (perhaps handed out before a restart) shows images of this catalog."""
        images = self.catalog.images
        return t.prompt_id in images.get(t.model_a, {}) and t.prompt_id in images.get(t.model_b, {})

    def answered(self, trial_id: str) -> bool:
        return trial_id in self.store or trial_id in self.checks

    def done(self, rater: str) -> int:
        return sum(r["rater_id"] == rater for r in self.store.rows()) + sum(
            r["rater_id"] == rater for r in self.checks.rows()
        )

    def _image_url(self, rater: str, entry) -> str:
        token = secrets.token_urlsafe(24)
        self.images[token] = (rater, entry)
        return f"/img/{token}"

    def present(self, t: Issued) -> dict:
        """What the rater's page needs to show trial ``t``: no setting, pair or side."""
        for token in [k for k, (r, _) in self.images.items() if r == t.rater]:
            del self.images[token]  # the page shows one trial: older addresses die
        a = self.catalog.images[t.model_a][t.prompt_id]
        b = self.catalog.images[t.model_b][t.prompt_id]
        left, right = (a, b) if t.left == "a" else (b, a)
        return {
            "trial_id": t.trial_id,
            "caption": self.catalog.captions[t.prompt_id],
            "question_text": QUESTIONS[t.question],
            "left_image": self._image_url(t.rater, left),
            "right_image": self._image_url(t.rater, right),
            "done": self.done(t.rater),
            "target": self.target,
        }

    def _repeatable(self, rater: str) -> list[dict]:
        mine = [r for r in self.store.rows() if r["rater_id"] == rater]
        repeated = {r["repeat_of"] for r in self.checks.rows() if r["rater_id"] == rater}
        images = self.catalog.images
        return [
            r
            for r in mine[: max(0, len(mine) - REPEAT_GAP)]
            if r["judgment_id"] not in repeated
            and r["question"] in self.questions
            and int(r["prompt_id"]) in images.get(r["model_a"], {})
            and int(r["prompt_id"]) in images.get(r["model_b"], {})
        ]

    def new_trial(self, rater: str) -> Issued:
        trial_id = secrets.token_hex(TRIAL_ID_LENGTH // 2)
        u = self.rng.random()
        if u < self.attention_rate:
            model = self.catalog.models[int(self.rng.integers(len(self.catalog.models)))]
            prompts = sorted(self.catalog.images[model])
            prompt = prompts[int(self.rng.integers(len(prompts)))]
            question = self.questions[int(self.rng.integers(len(self.questions)))]
            return Issued(trial_id, rater, "attention", question, model, model, prompt, "a", time.time())
        repeatable = self._repeatable(rater) if u < self.attention_rate + self.repeat_rate else []
        if repeatable:
            old = repeatable[int(self.rng.integers(len(repeatable)))]
            left = "b" if old["left_model"] == old["model_a"] else "a"
            return Issued(
                trial_id,
                rater,
                "repeat",
                old["question"],
                old["model_a"],
                old["model_b"],
                int(old["prompt_id"]),
                left,
                time.time(),
                old["judgment_id"],
            )
        s = self.scheduler.next_trial(rater, trial_id)
        a, b = (self.catalog.models[k] for k in self.scheduler.pairs[s.pair])
        return Issued(trial_id, rater, "pair", s.question, a, b, s.prompt_id, "a" if s.left_is_a else "b", time.time())

    async def next(self, request: Request) -> JSONResponse:
        rater = self.rater(request)
        await read_json(request, set())
        with self.lock:
            open_id = self.current.get(rater)
            if open_id is None or self.answered(open_id):
                t = self.new_trial(rater)
                self.log.append(asdict(t))
                self.trials[t.trial_id] = t
                self.current[rater] = t.trial_id
            return JSONResponse(self.present(self.trials[self.current[rater]]))

    def _own_trial(self, rater: str, trial_id: str) -> Issued:
        t = self.trials.get(trial_id)
        if t is None:
            raise BadRequest(404, "no such trial in this session")
        if t.rater != rater:
            raise BadRequest(403, "this trial was handed to another rater")
        if not self.shows(t):
            raise BadRequest(410, "this trial's images are no longer part of the session")
        return t

    def row_of(self, t: Issued, answer: str) -> dict:
        left_is_a = t.left == "a"
        winner = "tie" if answer == "tie" else ("a" if (answer == "left") == left_is_a else "b")
        common = {
            "judgment_id": t.trial_id,
            "rater_id": t.rater,
            "timestamp": utc_timestamp(),
            "question": t.question,
            "prompt_id": t.prompt_id,
            "model_a": t.model_a,
            "model_b": t.model_b,
            "winner": winner,
            "elapsed_ms": max(0, round((time.time() - t.issued) * 1000)),
        }
        if t.kind != "pair":
            return {**common, "kind": t.kind, "repeat_of": t.repeat_of}
        images = self.catalog.images
        return {
            **common,
            "left_model": t.model_a if left_is_a else t.model_b,
            "right_model": t.model_b if left_is_a else t.model_a,
            "image_a": images[t.model_a][t.prompt_id].image_id,
            "image_b": images[t.model_b][t.prompt_id].image_id,
            "seed": self.catalog.seed,
            "caption": " ".join(self.catalog.captions[t.prompt_id].split()),
        }

    async def answer(self, request: Request) -> JSONResponse:
        rater = self.rater(request)
        data = await read_json(request, {"trial_id", "answer"})
        if data["answer"] not in ("left", "right", "tie"):
            raise BadRequest(400, f"answer must be 'left', 'right' or 'tie', got {data['answer']!r}")
        with self.lock:
            t = self._own_trial(rater, data["trial_id"])
            store = self.store if t.kind == "pair" else self.checks
            row = self.row_of(t, data["answer"])
            before = store.get(t.trial_id)
            if before is not None:
                if before["winner"] != row["winner"]:
                    raise BadRequest(409, "this trial is answered already (undo it to change the answer)")
                return JSONResponse({"status": "duplicate", "judgment_id": t.trial_id, "done": self.done(rater)})
            store.append(row)
            if t.kind == "pair":
                self.scheduler.record(t.question, t.model_a, t.model_b, row["winner"], t.prompt_id, rater, t.trial_id)
            self.last[rater] = t.trial_id
            return JSONResponse({"status": "recorded", "judgment_id": t.trial_id, "done": self.done(rater)})

    async def undo(self, request: Request) -> JSONResponse:
        rater = self.rater(request)
        data = await read_json(request, {"judgment_id"})
        with self.lock:
            t = self._own_trial(rater, data["judgment_id"])
            if self.last.get(rater) != t.trial_id:
                raise BadRequest(409, "only your latest answer can be undone")
            store = self.store if t.kind == "pair" else self.checks
            try:
                row = store.remove(t.trial_id, rater, UNDO_S)
            except ValueError as e:
                raise BadRequest(409, str(e)) from None
            if t.kind == "pair":
                self.scheduler.forget(t.question, t.model_a, t.model_b, row["winner"], t.prompt_id, rater)
            del self.last[rater]
            self.current[rater] = t.trial_id
            return JSONResponse({"status": "undone", **self.present(t)})

    # ------------------------------------------------------------ admin

    def summary(self) -> dict:
        judgments, checks = self.store.rows(), self.checks.rows()
        stats = rater_statistics(judgments, checks)
        return {
            "judgments": len(judgments),
            "checks": len(checks),
            "target": self.target,
            "raters": [s.as_dict() for s in stats],
            "flagged": [s.rater for s in stats if s.flags],
            "pairs": self.scheduler.pair_table(),
            "refused_images": self.refused,
        }

    async def admin_json(self, request: Request) -> JSONResponse:
        self.admin(request)
        with self.lock:
            return JSONResponse(self.summary())

    def admin_page(self, request: Request) -> HTMLResponse:
        """(A plain def: Starlette runs it in a worker thread, so the fit never holds up the raters.)"""
        self.admin(request)
        with self.lock:
            summary = self.summary()
        try:  # the file, read without the lock: records are appended whole, undo replaces the file
            judgments = read_judgments(self.store.path)
            results = analyze(judgments, rounds=200, seed=0) if len(judgments.frame) else []
            body = "".join(_ratings_html(r.ratings_table(), r.question) for r in results) or "<p>No judgments yet.</p>"
        except (FitError, JudgmentError) as e:
            body = f"<p>Not enough judgments for finite ratings yet: {html.escape(str(e))}</p>"
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>Judging: admin</title>"
            "<link rel='stylesheet' href='/judge.css'></head><body class='admin'>"
            f"<h1>Judging session</h1><p>{summary['judgments']} judgments ({summary['target']} answers per rater "
            f"targeted) and {summary['checks']} attention checks and repeats. Ratings sum to 0; 95% bootstrap "
            f"intervals (200 rounds), all raters.</p>{body}{_raters_html(summary)}{_pairs_html(summary['pairs'])}"
            f"{_refused_html(summary['refused_images'])}</body></html>"
        )


def _ratings_html(table, question: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(r.model))}</td><td>{r.rating:.0f}</td>"
        f"<td>{r.lower:.0f} to {r.upper:.0f}</td><td>{r.n_judgments}</td></tr>"
        for r in table.itertuples()
    )
    return (
        f"<h2>Elo: {html.escape(question)}</h2><table><tr><th>model</th><th>Elo</th><th>95% interval</th>"
        f"<th>judgments</th></tr>{rows}</table>"
    )


def _fmt(value, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def _raters_html(summary: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s['rater'])}</td><td>{s['answers']}</td><td>{_fmt(s['median_s'], '.1f')}</td>"
        f"<td>{s['attention_passed']}/{s['attention_total']}</td><td>{s['consistent']}/{s['repeats']}</td>"
        f"<td>{_fmt(s['agreement'])}</td><td>{html.escape('; '.join(s['flags']))}</td></tr>"
        for s in summary["raters"]
    )
    hint = ""
    if summary["flagged"]:
        hint = (
            "<p>Fit without the flagged raters: <code>glide-eval elo JUDGMENTS.csv --exclude-raters "
            f"{html.escape(','.join(summary['flagged']))}</code></p>"
        )
    return (
        "<h2>Raters</h2><table><tr><th>rater</th><th>answers</th><th>median s</th><th>attention</th>"
        f"<th>consistent repeats</th><th>agreement with majority</th><th>flags</th></tr>{rows}</table>{hint}"
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


def _refused_html(refused: list[str]) -> str:
    if not refused:
        return ""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in refused)
    return f"<h2>Images left out at start</h2><ul>{items}</ul>"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: a free one; read it back from the socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run_server(session: JudgeApp, sock: socket.socket) -> None:
    """Serve ``session`` on the bound ``sock`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(session.app, log_level="warning", access_log=False)).run(sockets=[sock])
