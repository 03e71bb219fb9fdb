"""Every run-directory file is checked before it is trusted (issue 18, item 2).

One sweep of the fake engine is made once per module; each case damages one file of a copy
(truncated to 100 bytes, one byte flipped, deleted) and reruns: what can be rebuilt from
the shards or the config is rebuilt and equals the undamaged run (all but the timing
columns), what cannot is an error naming the file. No shard is ever resampled.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from damage import DAMAGE, truncate
from test_sweep import write_config
from test_sweep_lock import hold_lock, let_go

from glide_eval.cli import main
from glide_eval.sweep.config import load_config
from glide_eval.sweep.lock import HOLDER_NAME
from glide_eval.sweep.run import run_sweep
from glide_eval.sweep.rundir import DamagedFile, RunDir
from storage import TEMP_GLOB

TIMING = ["generate_s", "featurize_s", "metrics_s", "wall_time_s"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, Path]:
    """(the folder of a finished sweep, an untouched copy of its out/ as `made`/out)."""
    folder = tmp_path_factory.mktemp("sweep")
    run_sweep(load_config(write_config(folder)), progress=False, log=lambda m: None)
    made = tmp_path_factory.mktemp("made")
    shutil.copytree(folder / "out", made / "out")
    return folder, made


@pytest.fixture
def made(sweeps) -> Path:
    return sweeps[1]


@pytest.fixture
def copy(sweeps) -> Path:
    """The finished sweep, restored from `made` (same paths, so the same config hash)."""
    folder, made = sweeps
    shutil.rmtree(folder / "out")
    shutil.copytree(made / "out", folder / "out")
    return folder


def rerun(folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sweep", str(folder / "cfg.toml"), "--no-progress", "--json", *args])
    return result.exit_code, result.output


def table(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "out" / "results.parquet").drop(columns=TIMING)


def assert_rebuilt_equal(copy: Path, made: Path) -> None:
    pd.testing.assert_frame_equal(table(copy), table(made))
    csv, made_csv = (pd.read_csv(f / "out" / "results.csv").drop(columns=TIMING) for f in (copy, made))
    pd.testing.assert_frame_equal(csv, made_csv)
    with np.load(copy / "out" / "previews.npz") as a, np.load(made / "out" / "previews.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", ["results.parquet", "results.csv", "previews.npz", "manifest.json"])
def test_damaged_results_are_rebuilt_from_the_shards(copy, made, name, damage):
    code, out = rerun(copy)  # the undamaged copy: up to date, every file checked
    assert code == 0 and "results are up to date (every file checked)" in out
    DAMAGE[damage](copy / "out" / name)
    code, out = rerun(copy)
    assert code == 0, out
    assert "results are up to date" not in out and "merging the shards" in out
    assert json.loads(out[out.index("{") :])["shards_run"] == 0  # rebuilt from the shards, none resampled
    assert_rebuilt_equal(copy, made)
    assert "results are up to date" in rerun(copy)[1]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", ["captions.json", "config.toml"])
def test_damaged_run_files_are_rewritten_from_the_config(copy, made, name, damage):
    rerun(copy)
    before = (copy / "out" / name).read_bytes()
    DAMAGE[damage](copy / "out" / name)
    code, out = rerun(copy)
    assert code == 0, out
    if damage != "delete":
        assert f"{copy / 'out' / name} differs from the one this config gives" in out
    assert (copy / "out" / name).read_bytes() == before
    assert json.loads(out[out.index("{") :])["shards_run"] == 0
    assert_rebuilt_equal(copy, made)


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_run_json_falls_back_to_config_toml(copy, made, damage):
    rerun(copy)
    DAMAGE[damage](copy / "out" / "run.json")
    code, out = rerun(copy)
    assert code == 0 and "Traceback" not in out, out
    if damage != "delete":
        assert f"{copy / 'out' / 'run.json'} is damaged" in out and "run.json is rewritten" in out
    assert RunDir(copy / "out").read_run()["config_hash"] == load_config(copy / "cfg.toml").config_hash
    assert_rebuilt_equal(copy, made)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_run_json_and_config_toml_both_damaged_is_an_error_naming_them(copy, made, damage):
    rerun(copy)
    DAMAGE[damage](copy / "out" / "run.json")
    truncate(copy / "out" / "config.toml")
    code, out = rerun(copy)
    assert code == 1 and "Traceback" not in out and "JSONDecodeError" not in out
    assert f"{copy / 'out' / 'run.json'} is damaged" in out and str(copy / "out" / "config.toml") in out
    assert "--force" in out
    code, out = rerun(copy, "--force")
    assert code == 0, out
    assert json.loads(out[out.index("{") :])["shards_run"] == 0  # --force keeps the shards whose keys match
    assert_rebuilt_equal(copy, made)


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_config_being_run_damaged_is_an_error_naming_it(copy, damage):
    rerun(copy)  # run.json now records the copy's config.toml
    config_toml = copy / "out" / "config.toml"
    if damage == "flip":  # a damage that still parses, and would change the sweep
        text = config_toml.read_text()
        assert '"seed" = 7' in text
        config_toml.write_text(text.replace('"seed" = 7', '"seed" = 8'))
    else:
        DAMAGE[damage](config_toml)
    result = CliRunner().invoke(main, ["sweep", str(config_toml), "--no-progress"])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert str(config_toml) in result.output
    if damage == "flip":
        assert "is damaged (its sha256 differs from the one in" in result.output


def test_read_captions_is_checked_against_run_json(copy):
    run_dir = RunDir(copy / "out")
    assert len(run_dir.read_captions()) == 14
    path = copy / "out" / "captions.json"
    path.write_text(path.read_text().replace("a ", "b ", 1))
    with pytest.raises(DamagedFile, match="captions.json is damaged"):
        run_dir.read_captions()


def test_a_run_directory_of_the_previous_code_is_re_merged_to_equal_results(copy, made):
    """What the code before issue 18 wrote: a manifest without file hashes, run.json without its own."""
    out = copy / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    run = json.loads((out / "run.json").read_text())
    del run["files"], run["sha256"]
    (out / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    code, text = rerun(copy)
    assert code == 0 and "written by an older glide-eval" in text, text
    assert json.loads(text[text.index("{") :])["shards_run"] == 0
    assert_rebuilt_equal(copy, made)
    assert "files" in json.loads((out / "manifest.json").read_text())


def test_stale_temp_files_are_removed_under_the_lock(copy):
    out = copy / "out"
    stale = [out / ".results.csv.abcd1234.tmp", out / "shards" / "cfg-1" / ".00000.npz.x1y2z3w4.tmp"]
    kept = out / "report" / ".figure6.png.q1w2e3r4.tmp"  # the report is not the sweep's to clean
    for path in [*stale, kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    code, text = rerun(copy)
    assert code == 0 and "removed 2 temporary files of an interrupted run" in text, text
    assert not any(p.exists() for p in stale) and kept.exists()
    assert [p for p in out.rglob(TEMP_GLOB) if p != kept] == []


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_report_refuses_damaged_results_naming_them(copy, damage):
    DAMAGE[damage](copy / "out" / "results.parquet")
    result = CliRunner().invoke(main, ["report", str(copy / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output and "ArrowInvalid" not in result.output
    assert f"{copy / 'out' / 'results.parquet'} is {'missing' if damage == 'delete' else 'damaged'}" in result.output
    assert "rerun `glide-eval sweep`" in result.output


def test_the_report_takes_the_run_directory_lock(copy):
    """`glide-eval report` reads under RUN_DIR's lock: refused naming the holder while another
    process holds it, and with --wait it waits for the holder to let go and then writes the report."""
    out = copy / "out"
    proc = hold_lock(out)
    try:
        result = CliRunner().invoke(main, ["report", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        holder = f"{out} is in use by another process (host {socket.gethostname()}, PID {proc.pid}, since "
        assert holder in result.output and "test holder" in result.output and not (out / "report").exists()
        threading.Timer(1.0, let_go, [proc]).start()
        t0 = time.monotonic()
        result = CliRunner().invoke(main, ["report", str(out), "--wait"])
        assert result.exit_code == 0, result.output
        assert time.monotonic() - t0 >= 0.9 and (out / "report" / "report.html").is_file()
    finally:
        proc.kill()
        proc.wait()
    assert not (out / HOLDER_NAME).exists()  # the report let go of it too
