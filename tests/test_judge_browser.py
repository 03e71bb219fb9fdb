"""`glide-eval judge` end to end in real headless Chromium (selenium + the system chromedriver;
nothing is downloaded, and Chromium resolves no name but the test's own): a rater opens their
link and makes 20 judgments by mouse and keyboard with an undo, the server SIGKILLed mid-way
(one answer given while it is down) and restarted. Every response the rater's browser receives
is captured (Chrome DevTools Network events) and must name no setting, pair or side, and every
image must have the same byte length; the CSV must hold exactly the judgments made, under the
rater's name, and `glide-eval elo` must read it with zero invalid rows. A page reached under
another host name (DNS rebinding) gets nothing and writes nothing; Enter does not answer; the
phone layout shows both images and touch-sized buttons without key hints. Skipped where
chromium or chromedriver is absent (CI installs both with apt)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from judge_runs import CAPTIONS, SETTING_COLOURS, write_run
from PIL import Image

from glide_eval.cli import main
from human_eval.judge.pixels import encoded_length
from human_eval.judgments import read_judgments

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parents[1]
SECRET_WORDS = ("unguided", "cfg:1", "cfg:3", "cfg-1", "cfg-3", "run/", "model", "pair", '"left":', "image_a")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt: chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, out: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = ["judge", str(run), "--out", str(out), "--port", str(port), "--seed", "1", "--target", "20"]
    with open(log, "ab") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "glide_eval", *args, "--raters", "tester_1"], stdout=err, stderr=err, env=env
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/config")
            if conn.getresponse().status == 401:  # up, and this client has no link
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"server did not start: {log.read_text()}")


def raw_request(port: int, path: str, host: str | None = None, method: str = "GET", body: bytes = b"") -> tuple:
    """(status, bytes) of a request sent exactly as given (no client-side normalisation of ..)."""
    host = host or f"127.0.0.1:{port}"
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        if body:
            head += f"Content-Type: application/json\r\nOrigin: http://{host}\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def make_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # no name resolves but evil.example, to 127.0.0.1: all traffic stays on this machine
        "--host-resolver-rules=MAP evil.example 127.0.0.1,MAP * ~NOTFOUND,EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    return driver


class Capture:
    """Every response the browser receives: URL, status, headers and body (DevTools Network events)."""

    def __init__(self, driver):
        self.driver, self.responses, self.pending, self.lost = driver, [], {}, []

    def drain(self) -> None:
        from selenium.common.exceptions import WebDriverException

        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.responseReceived":
                if params["response"]["url"].startswith("http"):  # not Chromium's own chrome:// and data: pages
                    self.pending[params["requestId"]] = params["response"]
            elif message["method"] == "Network.requestWillBeSent" and params.get("redirectResponse"):
                self.responses.append({**params["redirectResponse"], "body": b""})
            elif message["method"] == "Network.loadingFinished" and params["requestId"] in self.pending:
                response = self.pending.pop(params["requestId"])
                try:
                    got = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": params["requestId"]})
                except WebDriverException as e:  # the document it belonged to is gone: say which
                    self.lost.append((response["url"], response["status"], str(e).splitlines()[0]))
                    continue
                body = base64.b64decode(got["body"]) if got["base64Encoded"] else got["body"].encode()
                self.responses.append({**response, "body": body})


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def server_trials(out: Path) -> dict[str, dict]:
    """The server's record of each trial it handed out (settings, sides): never sent to the browser."""
    lines = Path(f"{out}.trials.jsonl").read_text().splitlines()
    return {t["trial_id"]: t for t in map(json.loads, lines)}


def sides(trial: dict) -> tuple[str, str]:
    return (trial["model_a"], trial["model_b"]) if trial["left"] == "a" else (trial["model_b"], trial["model_a"])


def check_screenshot(driver, path: Path, out: Path, size: tuple[int, int]) -> None:
    """Caption visible, both images loaded and on screen (their colours on the screenshot)."""
    state = driver.execute_script("""
        const vis = (e) => { const r = e.getBoundingClientRect();
          return r.width > 0 && r.height > 0 && r.bottom <= innerHeight && r.right <= innerWidth; };
        const img = (id) => document.getElementById(id);
        return {caption: document.getElementById('caption').textContent,
                captionVisible: vis(document.getElementById('caption')),
                left: [img('left').complete, img('left').naturalWidth, vis(img('left'))],
                right: [img('right').complete, img('right').naturalWidth, vis(img('right'))]};""")
    assert state["caption"] in CAPTIONS and state["captionVisible"], state
    assert state["left"][0] and state["left"][1] > 0 and state["left"][2], state
    assert state["right"][0] and state["right"][1] > 0 and state["right"][2], state
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert shot.shape[:2] == (size[1], size[0])
    trial = server_trials(out)[driver.execute_script("return document.body.dataset.trial")]
    side = min(size) // 3
    for model in sides(trial):
        colour = np.array(SETTING_COLOURS[model.replace(":", "-")])
        assert (np.abs(shot.astype(int) - colour).max(-1) <= 8).sum() > side * side / 2, f"{model} image not on screen"


def images_loaded(driver) -> bool:
    return driver.execute_script(
        "return ['left','right'].every(i => document.getElementById(i).complete"
        " && document.getElementById(i).naturalWidth > 0)"
    )


def test_blind_judging_in_chromium_survives_a_killed_server(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = write_run(tmp_path)
    out, log, port = tmp_path / "judgments.csv", tmp_path / "server.log", free_port()
    server = start_server(run, out, port, log)
    link = wait_for(lambda: re.search(r"rater tester_1: (http://\S+)", log.read_text()), "the rater link")[1]
    admin = re.search(r"admin .*: (http://\S+)", log.read_text())[1]
    assert link.startswith(f"http://127.0.0.1:{port}/r/") and admin.startswith(f"http://127.0.0.1:{port}/admin/")
    driver = make_driver(tmp_path / "profile")
    capture = Capture(driver)
    made: list[tuple[str, str]] = []  # (judgment id, side answered)
    try:
        driver.get(f"http://evil.example:{port}/")  # a name that resolves here: DNS rebinding
        assert "Host header" in driver.find_element(By.TAG_NAME, "body").text
        capture.drain()
        driver.get(f"http://127.0.0.1:{port}/")  # no link yet: nothing to judge
        wait_for(lambda: driver.find_element(By.ID, "nolink").is_displayed(), "the open-your-link notice")
        capture.drain()
        driver.get(link)

        def trial_id() -> str:
            return driver.execute_script("return document.body.dataset.trial || ''")

        def done() -> int:
            return int(driver.execute_script("return document.body.dataset.done || '0'"))

        wait_for(trial_id, "the first trial")
        wait_for(lambda: images_loaded(driver), "both images")
        capture.drain()
        assert driver.find_element(By.ID, "rater").text == "tester_1"
        rendering = driver.execute_script("return getComputedStyle(document.getElementById('left')).imageRendering")
        assert rendering == "pixelated"  # 32 px shown at 384 px: crisp pixels, not a blur
        check_screenshot(driver, tmp_path / "judge_1280x800.png", out, (1280, 800))
        body = driver.find_element(By.TAG_NAME, "body")
        mouse = {"left": "left", "right": "btn-right", "tie": "btn-tie"}
        keys = {"left": Keys.ARROW_LEFT, "right": "l", "tie": Keys.SPACE}
        answers = ["left", "right", "tie", "left", "right"]

        def judge(k: int, down: bool = False) -> None:
            before = trial_id()
            side = answers[k % len(answers)]
            if k % 2:
                body.send_keys(keys[side])
            else:
                driver.find_element(By.ID, mouse[side]).click()
            if down:
                wait_for(lambda: "retrying" in driver.find_element(By.ID, "status").text, "the retry notice")
            else:
                wait_for(lambda: trial_id() not in ("", before), f"judgment {k}")
                wait_for(lambda: images_loaded(driver), f"the images after judgment {k}")
            made.append((before, side))
            capture.drain()

        for k in range(10):
            judge(k)
            if k == 4:  # undo the fifth answer, then answer it again
                undone = made.pop()
                body.send_keys(Keys.BACKSPACE)
                wait_for(lambda undone=undone: trial_id() == undone[0], "the undone trial back on screen")
                assert "undone" in driver.find_element(By.ID, "status").text
                wait_for(lambda: images_loaded(driver), "the undone trial's images")
                judge(4)
            if k == 6:  # Enter on a focused answer button answers nothing
                before, count = trial_id(), done()
                driver.execute_script("document.getElementById('btn-right').focus()")
                driver.switch_to.active_element.send_keys(Keys.ENTER)
                time.sleep(1.0)
                assert (trial_id(), done()) == (before, count)
        assert done() == 10
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        judge(10, down=True)  # answered while the server is dead
        server = start_server(run, out, port, log)
        before = made[-1][0]
        wait_for(lambda: trial_id() not in ("", before), "the page to resend the answer after the restart")
        wait_for(lambda: images_loaded(driver), "the images after the restart")
        for k in range(11, 20):
            judge(k)
        wait_for(lambda: done() == 20, "20 judgments")
        for path, expected in [
            ("/img/../../judgments.csv", 404),
            ("/img/%2e%2e/%2e%2e/judgments.csv", 404),
            ("/img/..%2f..%2fjudgments.csv.raters.json", 404),
            ("/elo", 403),
            ("/api/admin", 403),
        ]:
            status, data = raw_request(port, path)
            assert status == expected and b"model_a" not in data and b"unguided" not in data, (path, data)
        status, _ = raw_request(port, "/api/next", host=f"evil.example:{port}", method="POST", body=b"{}")
        assert status == 400
        phone_layout(driver, capture, tmp_path, out, trial_id)
        capture.drain()
        # Chromium keeps no body of its own favicon requests: the server's answer to one is checked here
        status, data = raw_request(port, "/favicon.ico")
        assert status == 404 and not any(word.encode() in data for word in SECRET_WORDS)
    finally:
        driver.quit()
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait(10)
    assert all(url.endswith("/favicon.ico") for url, _, _ in capture.lost), capture.lost
    check_blind(capture.responses, out)
    check_csv(out, made, tmp_path)
    if os.environ.get("JUDGE_SHOTS"):
        shutil.copytree(
            tmp_path, os.environ["JUDGE_SHOTS"], dirs_exist_ok=True, ignore=shutil.ignore_patterns("profile")
        )


def phone_layout(driver, capture: Capture, tmp_path: Path, out: Path, trial_id) -> None:
    """A 390x844 touch screen: laid out at its own width, both images side by side, buttons of
    at least 44 px, no key hints; the page reloaded shows the same open trial."""
    before = trial_id()
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    )
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    capture.drain()
    driver.refresh()
    wait_for(lambda: trial_id() == before, "the open trial after a reload")
    wait_for(lambda: images_loaded(driver), "the images on the phone")
    layout = driver.execute_script("""
        const box = (id) => document.getElementById(id).getBoundingClientRect();
        return {width: document.documentElement.clientWidth, left: box('left'), right: box('right'),
                buttons: [...document.querySelectorAll('#buttons button')].map(b => b.getBoundingClientRect().height),
                hints: [...document.querySelectorAll('.key')].filter(k => k.offsetParent !== null).length};""")
    assert layout["width"] == 390, layout  # the viewport meta: no 980 px layout shrunk to fit
    assert layout["left"]["right"] <= layout["right"]["left"] and layout["right"]["right"] <= 390, layout
    assert layout["left"]["width"] >= 150 and min(layout["buttons"]) >= 44 and layout["hints"] == 0, layout
    check_screenshot(driver, tmp_path / "judge_phone_390x844.png", out, (390, 844))


def check_blind(responses: list[dict], out: Path) -> None:
    """No response names a setting, a pair or a side; every image has the length its size gives."""
    assert len(responses) > 60
    images, kinds = [], set()
    for r in responses:
        headers = json.dumps(r["headers"]).lower()
        for text in (r["url"], headers, r["body"].decode("latin-1")):
            assert not any(word in text for word in SECRET_WORDS), (r["url"], text[:300])
        kinds.add(r["mimeType"])
        if r["mimeType"] == "image/png":
            images.append(r)
            assert r["headers"].get("cache-control", r["headers"].get("Cache-Control")) == "no-store"
        if r["mimeType"] == "application/json":
            data = json.loads(r["body"])
            assert set(data) <= {
                "trial_id",
                "caption",
                "question_text",
                "left_image",
                "right_image",
                "done",
                "target",
                "status",
                "judgment_id",
                "rater",
                "questions",
                "undo_s",
                "error",
            }, data
    assert {"text/html", "application/json", "image/png", "text/javascript", "text/css"} <= kinds
    trials = server_trials(out)
    shown = {m for t in trials.values() for m in (t["model_a"], t["model_b"])}
    assert shown == {"unguided", "cfg:1", "cfg:3"}  # images of every setting were received ...
    assert {len(r["body"]) for r in images} == {encoded_length(32, 32)}  # ... all of one length
    assert len(images) >= 2 * 20


def check_csv(out: Path, made: list[tuple[str, str]], tmp_path: Path) -> None:
    """The CSV holds exactly the judgments made, in order, by tester_1, and `glide-eval elo` reads all."""
    judgments = read_judgments(out)
    frame = judgments.frame
    assert judgments.issues == [] and len(frame) == 20 and frame["judgment_id"].is_unique
    assert list(frame["judgment_id"]) == [m[0] for m in made]
    trials = server_trials(out)
    for (jid, side), r in zip(made, frame.itertuples(), strict=True):
        trial = trials[jid]
        left, right = sides(trial)
        assert (r.model_a, r.model_b, r.left_model, r.right_model, int(r.prompt_id)) == (
            trial["model_a"],
            trial["model_b"],
            left,
            right,
            trial["prompt_id"],
        )
        won = {"left": left, "right": right, "tie": "tie"}[side]
        assert won == ("tie" if r.winner == "tie" else (r.model_a if r.winner == "a" else r.model_b))
        assert r.rater_id == "tester_1"
    res = CliRunner().invoke(
        main, ["elo", str(out), "--rounds", "50", "--l2", "0.1", "--json", "--out", str(tmp_path / "elo")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == {"read": 20, "used": 20, "dropped": 0}
