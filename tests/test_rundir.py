"""RunDir: the one owner of shard keys, finished records and results of a run directory."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from glide_eval.sweep.config import Setting
from glide_eval.sweep.plan import Shard
from glide_eval.sweep.rundir import FEATURE_PREFIX, RunDir, keyed_shards, shard_key

CAPTIONS = [f"caption {i}" for i in range(8)]


def _write(run_dir: RunDir, shard, save_images: str = "none") -> dict:
    n = shard.n
    arrays = {
        FEATURE_PREFIX + "pool": np.arange(n * 2, dtype=np.float64).reshape(n, 2) + shard.start,
        "sample_ids": np.arange(shard.start, shard.stop),
        "nan_count": np.asarray(1),
    }
    return run_dir.write_shard(shard, arrays, {"key": shard.key, "save_images": save_images})


def test_shard_key_covers_generation_setting_range_and_captions():
    a = Shard(Setting("cfg", 1.0), 0, 0, 4)
    key = shard_key("g", a, CAPTIONS[:4])
    expected = {"generation": "g", "setting": ["cfg", 1.0], "sample_ids": [0, 4], "captions": CAPTIONS[:4]}
    text = json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert key == hashlib.sha256(text.encode()).hexdigest()
    assert key != shard_key("h", a, CAPTIONS[:4])
    assert key != shard_key("g", Shard(Setting("cfg", 2.0), 0, 0, 4), CAPTIONS[:4])
    assert key != shard_key("g", a, ["other", *CAPTIONS[1:4]])
    steps = Shard(Setting("steps", 3.0, "ddim", "10", "cfg"), 0, 0, 4)  # sampler overrides join the key
    assert shard_key("g", steps, CAPTIONS[:4]) != shard_key("g", Shard(Setting("steps", 3.0), 0, 0, 4), CAPTIONS[:4])


def test_only_intact_shards_with_the_expected_key_count_as_finished(tmp_path):
    run_dir = RunDir(tmp_path)
    shards = [Shard(Setting("cfg", 1.0), k, 4 * k, 4 * k + 4) for k in range(2)]
    first, second = keyed_shards(shards, "gen", CAPTIONS)
    record = _write(run_dir, first)
    npz = tmp_path / "shards" / "cfg-1" / "00000.npz"
    assert record["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert record["file"] == "shards/cfg-1/00000.npz"
    assert run_dir.finished_record(first) == record
    assert run_dir.unfinished([first, second]) == [second]
    assert run_dir.finished_record(first, need_images="png") is None  # made without images
    other_key = keyed_shards(shards[:1], "another generation", CAPTIONS)[0]
    assert run_dir.finished_record(other_key) is None
    npz.write_bytes(npz.read_bytes()[:-1])  # truncated after its record was written
    assert run_dir.finished_record(first) is None


def test_load_features_concatenates_the_first_n_samples(tmp_path):
    run_dir = RunDir(tmp_path)
    shards = [Shard(Setting("none", 0.0), k, 4 * k, 4 * k + 4) for k in range(2)]
    for shard in keyed_shards(shards, "gen", CAPTIONS):
        _write(run_dir, shard)
    side = run_dir.load_features(shards, n=6)
    expected = np.concatenate([np.arange(8).reshape(4, 2), np.arange(8).reshape(4, 2)[:2] + 4]).astype(np.float64)
    assert np.array_equal(side["features"]["pool"], expected) and side["nan_count"] == 2
    assert len(run_dir.load_features(shards)["features"]["pool"]) == 8
