"""Sweep orchestration: config, plan, resume after SIGKILL, one process == two, --force.

The engine is the deterministic fake of test_sweep_fakes.py; every check compares the
sweep's output with the fake computed directly, or one run with another.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_sweep_fakes as fakes
from click.testing import CliRunner

from glide_eval.cli import main
from glide_eval.sweep.config import ConfigError, load_config
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.run import run_sweep
from glide_eval.sweep.rundir import FEATURE_PREFIX, RunDir

TESTS = Path(__file__).parent
CAPTIONS = [
    f"a {c} {o} number {i}"
    for i, (c, o) in enumerate(
        (c, o) for c in ("red", "blue", "green", "grey") for o in ("cube", "ball", "cat", "bus", "tree")
    )
]
METRICS = ["fid", "is", "precision", "recall", "clip_score"]


def write_config(
    tmp_path: Path,
    name="cfg.toml",
    n=14,
    shard_size=4,
    batch_size=3,
    cfg="[1.0, 3.0]",
    clip="[2.0]",
    delay=0.0,
    extra="",
) -> Path:
    (tmp_path / "caps.txt").write_text("\n".join(CAPTIONS) + "\n")
    path = tmp_path / name
    path.write_text(f"""
[run]
output_dir = "{tmp_path / "out"}"
batch_size = {batch_size}
shard_size = {shard_size}
previews = 2
device = "cpu"
seed = 7
[models]
engine = "python:test_sweep_fakes:make_components"
[captions]
source = "file"
path = "{tmp_path / "caps.txt"}"
n = {n}
seed = 3
[grid]
unguided = true
cfg = {cfg}
clip = {clip}
[engine_options]
delay_s = {delay}
{extra}
""")
    return path


def env_with_tests_on_path() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    return env


def shard_contents(run_dir: Path) -> dict:
    out = {}
    for npz in sorted((run_dir / "shards").glob("*/*.npz")):
        data = RunDir(run_dir).load_shard(npz.parent.name, int(npz.stem))
        out[f"{npz.parent.name}/{npz.stem}"] = data
    return out


def assert_same_shards(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


def metric_table(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet")[["setting", "n_samples", "nan_count"] + METRICS]


# ---------------------------------------------------------------- config


def test_config_errors_name_the_key(tmp_path):
    path = write_config(tmp_path, extra="")
    text = path.read_text()
    for bad, key in [
        (text.replace("shard_size = 4", "shard_sise = 4"), "run.shard_sise"),
        (text.replace("batch_size = 3", 'batch_size = "3"'), "run.batch_size"),
        (text.replace('device = "cpu"', 'device = "tpu"'), "run.device"),
        (text.replace("cfg = [1.0, 3.0]", "cfg = [1.0, -3.0]"), "grid.cfg"),
        (text.replace("n = 14", "n = 0"), "captions.n"),
        (text + '\n[sampler]\nbase_respacing = "fast"\n', "sampler.base_respacing"),
        (text + "\n[metricz]\n", "metricz"),
        (text + '\n[metrics]\nnames = ["fid", "fld"]\n', "metrics.names"),
    ]:
        path.write_text(bad)
        with pytest.raises(ConfigError, match=rf"cfg\.toml: \[{key.replace('.', '[.]')}\]"):
            load_config(path)
    path.write_text("[run\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_config_paths_env_and_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_CHECKPOINTS", "/ckpts")
    config = load_config(write_config(tmp_path))
    assert config.models.checkpoints == "/ckpts"
    assert config.captions.path == str(tmp_path / "caps.txt")
    assert config["captions"]["path"] == config.captions.path  # the dict view python: engine factories may use
    assert config.output_dir == tmp_path / "out"
    assert (
        load_config(
            write_config(tmp_path, "rel.toml", extra="[sampler]\nresolution = 64"), {"run": {"output_dir": "rel"}}
        ).output_dir
        == Path.cwd() / "rel"
    )
    assert [s.name for s in config.settings] == ["unguided", "cfg-1", "cfg-3", "clip-2"]
    # the output dir does not change what a sweep produces; a batch size or a scale may
    same = load_config(write_config(tmp_path, "b.toml"), {"run": {"output_dir": "/x"}})
    assert same.config_hash == config.config_hash
    assert load_config(write_config(tmp_path, "d.toml", batch_size=5)).config_hash != config.config_hash
    assert load_config(write_config(tmp_path, "c.toml", cfg="[1.0, 4.0]")).config_hash != config.config_hash
    # the resolved config written next to the results reads back to the same config
    (tmp_path / "resolved.toml").write_text(config.to_toml())
    assert load_config(tmp_path / "resolved.toml").data == config.data


def test_dry_run_plan(tmp_path):
    path = write_config(
        tmp_path,
        n=10,
        shard_size=4,
        extra='[sampler]\nresolution = 256\nbase_respacing = "100"\nupsample_respacing = "fast27"',
    )
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["shards_per_setting"] == 3 and plan["shards_to_sample"] == 12
    by_name = {s["setting"]: s["model_evaluations"] for s in plan["settings"]}
    # per sample: cfg = 2 base passes per step, clip = 1 + one CLIP gradient per step, upsampler 27
    assert by_name["unguided"] == {"base": 100 * 10, "clip": 0, "upsampler": 27 * 10}
    assert by_name["cfg-3"] == {"base": 200 * 10, "clip": 0, "upsampler": 270}
    assert by_name["clip-2"] == {"base": 1000, "clip": 1000, "upsampler": 270}
    assert plan["model_evaluations"]["base"] == 1000 + 2000 + 2000 + 1000
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    text = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"]).output
    assert "cfg-3" in text and "model evaluations" in text


# ---------------------------------------------------------------- single run


def test_sweep_results_match_the_engine_computed_directly(tmp_path):
    config = load_config(write_config(tmp_path))
    summary = run_sweep(config, progress=False, log=lambda m: None, save_images="png")
    run_dir = config.output_dir
    captions = json.loads((run_dir / "captions.json").read_text())
    lines = (tmp_path / "caps.txt").read_text().split("\n")
    assert len(captions) == 14 and set(captions) <= set(lines)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert list(df["setting"]) == ["unguided", "cfg-1", "cfg-3", "clip-2"]
    assert summary["shards_run"] == 16
    for _, row in df.iterrows():
        family, scale = row["family"], row["scale"]
        images = np.stack([fakes.fake_image(7, i, c, family, scale, 8) for i, c in enumerate(captions)])
        expected = fakes.compute_metrics(fakes.featurize(images, captions), captions, False)
        for m in METRICS:
            assert row[m] == pytest.approx(expected[m], rel=1e-12), (row["setting"], m)
        assert row["n_samples"] == 14 and row["nan_count"] == 0
        assert row["config_hash"] == config.config_hash and row["sha256_fake_model"] == "0" * 64
        assert "numpy" in json.loads(row["versions"])
        png = run_dir / "images" / row["setting"] / "000005.png"
        from PIL import Image

        assert np.array_equal(np.asarray(Image.open(png)).transpose(2, 0, 1), images[5])
    previews = np.load(run_dir / "previews.npz")
    assert np.array_equal(
        previews["setting__cfg-3"], [fakes.fake_image(7, i, captions[i], "cfg", 3.0, 8) for i in range(2)]
    )
    assert list(previews["captions"]) == captions[:2]
    csv = pd.read_csv(run_dir / "results.csv")
    assert list(csv["setting"]) == list(df["setting"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["shards"]) == 16


def test_resume_skips_finished_shards_and_redoes_corrupt_ones(tmp_path):
    config = load_config(write_config(tmp_path))
    run_sweep(config, progress=False, log=lambda m: None)
    before = metric_table(config.output_dir)
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 0
    npz, _ = RunDir(config.output_dir).shard_paths("cfg-1", 2)
    npz.write_bytes(npz.read_bytes()[:-10])  # truncated shard: its hash no longer matches
    assert run_sweep(config, progress=False, log=lambda m: None)["shards_run"] == 1
    pd.testing.assert_frame_equal(metric_table(config.output_dir), before)
    # another batch size needs --force, which keeps every finished shard
    other_batch = load_config(write_config(tmp_path, "batch.toml", batch_size=5))
    with pytest.raises(SweepError, match="run.batch_size: 3 -> 5"):
        run_sweep(other_batch, progress=False, log=lambda m: None)
    assert run_sweep(other_batch, force=True, progress=False, log=lambda m: None)["shards_run"] == 0


def test_changed_config_is_refused_without_force(tmp_path):
    run_sweep(load_config(write_config(tmp_path)), progress=False, log=lambda m: None)
    changed = write_config(tmp_path, cfg="[1.0, 5.0]")
    result = CliRunner().invoke(main, ["sweep", str(changed), "--no-progress"])
    assert result.exit_code == 1
    assert "grid.cfg: [1.0, 3.0] -> [1.0, 5.0]" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(SweepError):
        run_sweep(load_config(changed), progress=False, log=lambda m: None)
    # with --force the shards of unchanged settings are reused; only cfg-5 is sampled
    summary = run_sweep(load_config(changed), force=True, progress=False, log=lambda m: None)
    assert summary["shards_run"] == 4
    assert list(pd.read_parquet(tmp_path / "out" / "results.parquet")["setting"]) == [
        "unguided",
        "cfg-1",
        "cfg-5",
        "clip-2",
    ]


# ---------------------------------------------------------------- processes


def test_sigkilled_sweep_resumes_to_identical_results(tmp_path):
    """SIGKILL the sweep at random moments (mid-shard, mid-write), resume, compare."""
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    ref_config = load_config(write_config(reference_dir, n=16, shard_size=4, batch_size=2))
    run_sweep(ref_config, progress=False, log=lambda m: None)

    path = write_config(tmp_path, n=16, shard_size=4, batch_size=2, delay=0.05)
    cmd = [sys.executable, "-m", "glide_eval", "sweep", str(path), "--no-progress"]
    records = tmp_path / "out" / "shards"
    rng = random.Random(1234)
    kills = 0
    for _attempt in range(4):
        # kill at a random moment after the next shard has been finished (so each run
        # makes progress, and the kill lands inside a later shard or its write)
        start_count = len(list(records.glob("*/*.json")))
        proc = subprocess.Popen(
            cmd, env=env_with_tests_on_path(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while proc.poll() is None and len(list(records.glob("*/*.json"))) <= start_count:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3, "the sweep finished before it could be killed; raise delay_s"
    done = len(list((tmp_path / "out" / "shards").glob("*/*.json")))
    assert 0 < done < 16, done  # killed part-way
    final = subprocess.run(cmd, env=env_with_tests_on_path(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert_same_shards(shard_contents(tmp_path / "out"), shard_contents(ref_config.output_dir))
    pd.testing.assert_frame_equal(metric_table(tmp_path / "out"), metric_table(ref_config.output_dir))
    assert list((tmp_path / "out").rglob("*.tmp")) == []  # a killed write's temp file goes at the next run
    for name, data in shard_contents(tmp_path / "out").items():
        k = int(name.split("/")[1])
        assert list(data["sample_ids"]) == list(range(4 * k, 4 * k + 4))


def test_two_processes_equal_one(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    config = load_config(write_config(one, n=10, shard_size=3))
    run_sweep(config, progress=False, log=lambda m: None)

    two = tmp_path / "two"
    two.mkdir()
    path = write_config(two, n=10, shard_size=3)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "glide_eval",
        "sweep",
        str(path),
        "--no-progress",
        "--json",
    ]
    result = subprocess.run(cmd, env=env_with_tests_on_path(), cwd=two, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1/2]" in result.stderr and "[rank 0/2]" in result.stderr
    ranks = {json.loads((p.with_suffix(".json")).read_text())["rank"] for p in (two / "out" / "shards").glob("*/*.npz")}
    assert ranks == {0, 1}
    assert_same_shards(shard_contents(two / "out"), shard_contents(one / "out"))
    pd.testing.assert_frame_equal(metric_table(two / "out"), metric_table(one / "out"))
    features = RunDir(two / "out").load_shard("clip-2", 1)
    assert FEATURE_PREFIX + "pool" in features


def test_real_glide_pipeline_two_processes_equal_one(tmp_path):
    """samplers.pipeline (tiny random-weight base + upsampler) through the sweep, 1 vs 2 ranks."""
    import torch

    from samplers.pipeline import load_glide_models, sample_images

    tiny = """[sampler]
resolution = 256
base_respacing = "4"
upsample_respacing = "3"
[engine_options]
random_weights = true
tiny = true
"""
    runs = {}
    for name, launcher in (
        ("one", []),
        (
            "two",
            ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(30500 + os.getpid() % 1000)],
        ),
    ):
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder, n=6, shard_size=4, batch_size=3, cfg="[3.0]", clip="[]", extra=tiny)
        path.write_text(
            path.read_text()
            .replace("[engine_options]\ndelay_s = 0.0\n", "")
            .replace("make_components", "make_tiny_glide_components")
        )
        cmd = [sys.executable, *(launcher or []), "-m", "glide_eval", "sweep", str(path), "--no-progress"]
        env = dict(env_with_tests_on_path(), OMP_NUM_THREADS="1")  # as torchrun sets for each rank
        result = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = folder / "out"
    assert_same_shards(shard_contents(runs["two"]), shard_contents(runs["one"]))
    pd.testing.assert_frame_equal(metric_table(runs["two"]), metric_table(runs["one"]))
    # the previews are the pipeline's images for the first batch, computed here directly
    captions = json.loads((runs["one"] / "captions.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = load_glide_models(None, upsample=True, random_weights=True, tiny=True)
        direct = sample_images(
            models,
            captions[:3],
            [0, 1, 2],
            7,
            guidance=("cfg", 3.0),
            respacing="4",
            upsample=True,
            upsample_respacing="3",
            batch_size=3,
        ).images.numpy()
    finally:
        torch.set_num_threads(threads)
    assert direct.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(np.load(runs["one"] / "previews.npz")["setting__cfg-3"], direct[:2])
