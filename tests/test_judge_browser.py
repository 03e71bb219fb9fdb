"""`glide-eval judge` end to end in real headless Chromium (selenium + the system chromedriver;
nothing is downloaded): 20 judgments by mouse and keyboard with an undo, the server SIGKILLed
mid-way (one answer given while it is down) and restarted; the CSV must hold exactly the
judgments made, `glide-eval elo` must read it with zero invalid rows, and a 1280x800
screenshot must show the caption and both images. Skipped where chromium or chromedriver is
absent (CI installs both with apt)."""

from __future__ import annotations

import http.client
import io
import json
import os
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
from glide_eval.judge.images import build_catalog
from human_eval.judgments import read_judgments

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parents[1]

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
    with open(log, "ab") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "glide_eval",
                "judge",
                str(run),
                "--out",
                str(out),
                "--port",
                str(port),
                "--seed",
                "1",
                "--target",
                "20",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/config")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"server did not start: {log.read_text()}")


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (no client-side normalisation of ..)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
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
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    return driver


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def models_of(run: Path, trial: dict) -> tuple[str, str, str, str]:
    """(model_a, model_b, left model, right model) of a trial, from the session's catalog."""
    catalog = build_catalog([run])
    a, b = (catalog.models[k] for k in sorted(catalog.pair_prompts())[trial["pair"]])
    return (a, b, a, b) if trial["left"] == "a" else (a, b, b, a)


def check_screenshot(driver, path: Path, run: Path) -> None:
    """Caption visible, both images loaded, and their colours on the 1280x800 screenshot."""
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
    assert shot.shape == (800, 1280, 3)
    for model in models_of(run, driver.execute_script("return state.trial"))[:2]:
        setting = model.replace(":", "-")
        colour = np.array(SETTING_COLOURS[setting])
        assert (np.abs(shot.astype(int) - colour).max(-1) <= 8).sum() > 100 * 100, f"{setting} image not on screen"


def test_judging_in_chromium_survives_a_killed_server(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = write_run(tmp_path)
    out, log, port = tmp_path / "judgments.csv", tmp_path / "server.log", free_port()
    server = start_server(run, out, port, log)
    driver = make_driver(tmp_path / "profile")
    made: list[tuple[str, str, dict]] = []  # (judgment id, side answered, trial)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "rater-input").send_keys("tester_1")
        driver.find_element(By.ID, "start").click()

        def trial_id() -> str:
            return driver.execute_script("return document.body.dataset.trial || ''")

        wait_for(trial_id, "the first trial")
        wait_for(
            lambda: driver.execute_script(
                "return ['left','right'].every(i => document.getElementById(i).complete"
                " && document.getElementById(i).naturalWidth > 0)"
            ),
            "both images",
        )
        check_screenshot(driver, tmp_path / "judge_1280x800.png", run)
        body = driver.find_element(By.TAG_NAME, "body")
        mouse = {"left": "left", "right": "btn-right", "tie": "btn-tie"}
        keys = {"left": Keys.ARROW_LEFT, "right": "l", "tie": Keys.SPACE}
        sides = ["left", "right", "tie", "left", "right"]

        def judge(k: int, down: bool = False) -> None:
            before, trial = trial_id(), driver.execute_script("return state.trial")
            side = sides[k % len(sides)]
            if k % 2:
                body.send_keys(keys[side])
            else:
                driver.find_element(By.ID, mouse[side]).click()
            if down:
                wait_for(lambda: "retrying" in driver.find_element(By.ID, "status").text, "the retry notice")
            else:
                wait_for(lambda: trial_id() not in ("", before), f"judgment {k}")
            made.append((before, side, trial))

        for k in range(10):
            judge(k)
            if k == 4:  # undo the fifth answer, then answer it again
                undone = made.pop()
                body.send_keys(Keys.BACKSPACE)
                wait_for(lambda undone=undone: trial_id() == undone[0], "the undone trial back on screen")
                assert "undone" in driver.find_element(By.ID, "status").text
                judge(4)
        assert int(driver.execute_script("return document.body.dataset.done")) == 10
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        judge(10, down=True)  # answered while the server is dead
        server = start_server(run, out, port, log)
        before = made[-1][0]
        wait_for(lambda: trial_id() not in ("", before), "the page to resend the answer after the restart")
        for k in range(11, 20):
            judge(k)
        wait_for(lambda: driver.execute_script("return document.body.dataset.done") == "20", "20 judgments")
        status, data = raw_get(port, "/image/run/../../judgments.csv")
        assert 400 <= status < 500 and b"model_a" not in data
        status, data = raw_get(port, "/image/%2e%2e/%2e%2e/judgments.csv")
        assert 400 <= status < 500 and b"model_a" not in data
    finally:
        driver.quit()
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait(10)
    check_csv(out, made, run, tmp_path)


def check_csv(out: Path, made: list[tuple[str, str, dict]], run: Path, tmp_path: Path) -> None:
    """The CSV holds exactly the judgments made, in order, and `glide-eval elo` reads all of them."""
    judgments = read_judgments(out)
    frame = judgments.frame
    assert judgments.issues == [] and len(frame) == 20 and frame["judgment_id"].is_unique
    assert list(frame["judgment_id"]) == [m[0] for m in made]
    for (_, side, trial), r in zip(made, frame.itertuples(), strict=True):
        model_a, model_b, left, right = models_of(run, trial)
        assert (r.model_a, r.model_b, r.left_model, r.right_model, int(r.prompt_id)) == (
            model_a,
            model_b,
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
