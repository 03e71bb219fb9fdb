"""storage: one definition of each file primitive, and the run-directory format spelled in one module.

The format's checked readers are tested on a small run directory written through `RunFiles`
itself; the sweep's use of them in test_rundir.py, test_rundir_verify.py and test_sweep.py."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_judge import row

import storage
from human_eval.judge.store import JudgmentStore
from storage import DamagedFile, sha256_json
from storage.rundir import (
    CAPTIONS_JSON,
    CONFIG_TOML,
    FEATURE_PREFIX,
    HOLDER_NAME,
    LOCK_NAME,
    MANIFEST_JSON,
    PREVIEW_PREFIX,
    RESULT_FILES,
    RUN_JSON,
    RunFiles,
    feature_arrays,
    shard_features,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("glide_eval", "reports", "human_eval", "metrics", "samplers", "storage", "torchvision_compat")
NAMES = {*RESULT_FILES, CONFIG_TOML, CAPTIONS_JSON, RUN_JSON, MANIFEST_JSON, LOCK_NAME, HOLDER_NAME}
PREFIXES = (FEATURE_PREFIX, PREVIEW_PREFIX)
# string constants equal to a run-directory name that name something else
NOT_RUN_DIRECTORY = {("glide_eval/toy/train.py", "manifest.json")}  # the toy weights' manifest


def test_no_module_but_the_format_spells_a_run_directory_name_or_prefix():
    """Every string constant of the product packages (docstrings and messages aside: an f-string's
    text or a help text is prose) that is a run-directory file name or starts with a key prefix."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            if where == "storage/rundir.py":
                continue
            tree = ast.parse(path.read_text())
            prose = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
                    text = node.value
                    if (text in NAMES and (where, text) not in NOT_RUN_DIRECTORY) or text.startswith(PREFIXES):
                        found.append(f"{where}:{node.lineno} {text!r}")
    assert found == []


def test_each_file_primitive_has_one_definition():
    """atomic writes, sha256 of a file, package versions, the corrupt-file error, the normal quantile:
    defined once in the repository's packages (a `def`/`class` of that name anywhere else is a copy)."""
    names = {"atomic_write", "atomic_write_with", "atomic_save_npz", "save_npz", "sha256_file", "cached_sha256"}
    names |= {"package_versions", "CorruptFileError", "normal_z", "bonferroni_z", "file_mode", "_fsync_dir"}
    defined: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                    defined.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {k: v for k, v in defined.items() if len(v) > 1} == {}
    assert all(v[0].startswith(("storage/", "metrics/normal.py")) for v in defined.values()), defined


def finished_run(folder: Path) -> RunFiles:
    run = RunFiles(folder)
    run.write_run_texts({CONFIG_TOML: "[run]\n", CAPTIONS_JSON: storage.json_text(["a cat", "a dog"])})
    run.write_run({"config_hash": "c", "captions_sha256": sha256_json(["a cat", "a dog"])})
    previews = {"cfg-3": np.zeros((2, 3, 4, 4), np.uint8), "unguided": np.ones((3, 3, 4, 4), np.uint8)}
    rows = [{"setting": "cfg-3", "fid": 1.5}, {"setting": "unguided", "fid": 2.5}]
    differences = pd.DataFrame({"a": ["cfg-3"], "b": ["unguided"], "difference": [-1.0]})
    run.write_results(rows, previews, ["a cat", "a dog"], {"shards": []}, differences)
    return run


def test_the_readers_return_what_the_writers_wrote_and_refuse_what_fails_its_sha256(tmp_path):
    run = finished_run(tmp_path)
    assert run.damaged_results() is None and run.read_captions() == ["a cat", "a dog"]
    df, path = run.read_results()
    assert path == run.results_parquet and list(df["fid"]) == [1.5, 2.5]
    previews, captions = run.read_previews()
    assert sorted(previews) == ["cfg-3", "unguided"] and previews["unguided"].shape == (2, 3, 4, 4)
    assert captions == ["a cat", "a dog"] and list(run.read_differences()["difference"]) == [-1.0]
    # a results file that is not the one manifest.json recorded: a DamagedFile naming it, for every reader
    pd.DataFrame({"setting": ["x"]}).to_parquet(run.results_parquet)
    with pytest.raises(DamagedFile, match=f"{run.results_parquet} is damaged"):
        run.read_results()
    run.differences_csv.write_text("a,b\n1,2\n")
    with pytest.raises(DamagedFile, match=f"{run.differences_csv} is damaged"):
        run.read_differences()
    # run.json edited without its sha256, captions that are not what it records, or not captions at all
    run.run_json.write_text(run.run_json.read_text().replace('"c"', '"d"'))
    with pytest.raises(DamagedFile, match=f"{run.run_json} is damaged .its content does not match its sha256"):
        run.read_run()
    run.write_run({"config_hash": "c", "captions_sha256": sha256_json(["a cat"])})
    with pytest.raises(DamagedFile, match=f"{run.captions_json} is damaged .it does not match the captions_sha256"):
        run.read_captions()
    run.captions_json.write_text('{"0": "a cat"}')
    with pytest.raises(DamagedFile, match="not a list of caption strings"):
        run.read_captions()


def test_shard_features_round_trip_through_their_key_prefix(tmp_path):
    run = RunFiles(tmp_path)
    features = {"pool": np.arange(6.0).reshape(3, 2), "logits": np.ones((3, 4))}
    record = run.save_shard("cfg-3", 2, {**feature_arrays(features), "nan_count": np.asarray(0)}, {"key": "k"})
    assert record["file"] == str(run.shard_paths("cfg-3", 2)[0].relative_to(tmp_path))
    assert run.verified_record("cfg-3", 2, "k") == record and run.verified_record("cfg-3", 2, "other") is None
    loaded = shard_features(run.load_shard("cfg-3", 2))
    assert sorted(loaded) == ["logits", "pool"] and np.array_equal(loaded["pool"], features["pool"])


def test_the_judgment_store_rewrites_with_the_umask_mode(tmp_path):
    """The judging store's undo rewrites the file through storage's atomic write: the mode a plain
    open() gives under the umask (it used to force 0644)."""
    old = os.umask(0o027)
    try:
        path = tmp_path / "j.csv"
        with JudgmentStore(path) as store:
            store.append(row(1))
            store.append(row(2))
            store.remove(f"{2:032x}", "r1", max_age_s=60)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and len(path.read_text().splitlines()) == 2
        assert not list(tmp_path.glob(storage.TEMP_GLOB))
    finally:
        os.umask(old)
