"""`glide-eval regress` end to end: a baseline sweep of a tiny GLIDE base model (test_regress_engine),
then the same checkpoint, a degraded one (weights + noise) and protocol mismatches against it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_regress_engine as engine
from click.testing import CliRunner

from glide_eval.cli import main
from glide_eval.sweep.config import Setting, load_config
from glide_eval.sweep.run import run_sweep
from storage import sha256_json

CAPTIONS = [
    f"{n} {c} {s}"
    for n in ("one", "two", "three")
    for c in ("red", "blue", "green", "white", "grey")
    for s in ("cube", "ball")
]
N, SHARD, BATCH = 24, 8, 4
METRICS = ["fid", "is", "precision", "recall", "clip_score"]


def write_config(
    folder: Path,
    name: str,
    checkpoints: Path,
    reference: Path,
    output: Path,
    respacing: str = "3",
    captions_file: str = "caps.txt",
    captions: list[str] = CAPTIONS,
    cfg: str = "[3.0]",
) -> Path:
    (folder / captions_file).write_text("\n".join(captions) + "\n")
    path = folder / name
    path.write_text(f"""
[run]
output_dir = "{output}"
seed = 5
batch_size = {BATCH}
shard_size = {SHARD}
previews = 1
device = "cpu"
[models]
engine = "python:test_regress_engine:make_components"
checkpoints = "{checkpoints}"
[sampler]
base_respacing = "{respacing}"
[captions]
source = "file"
path = "{folder / captions_file}"
n = {N}
seed = 1
[grid]
unguided = true
cfg = {cfg}
[engine_options]
reference = "{reference}"
""")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny convolutions on a shared 2-core machine are 10x slower with two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("regress")
    good, bad = root / "good", root / "bad"
    engine.save_checkpoint(good, seed=0)
    engine.save_checkpoint(bad, noise=1.0, like=good / "base.pt")
    # reference "real" features: the good model's samples for other seeds, both settings
    models = engine.load_models(good)
    sampler = {"run": {"seed": 99}, "sampler": {"base_respacing": "3", "method": "ancestral"}}
    pools = []
    for setting in (Setting("none", 0.0), Setting("cfg", 3.0)):
        caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(32)]
        images, _ = engine.generate_with(models, sampler, caps, list(range(32)), setting)
        pools.append(engine.featurize(images, caps)["pool"])
    np.savez(root / "ref.npz", pool=np.concatenate(pools))
    config_path = write_config(root, "baseline.toml", good, root / "ref.npz", root / "baseline")
    run_sweep(load_config(config_path), save_images="png", progress=False, log=lambda m: None)
    return {"root": root, "good": good, "bad": bad, "baseline": root / "baseline", "reference": root / "ref.npz"}


def regress(*args):
    result = CliRunner().invoke(main, ["regress", "--no-progress", *map(str, args)])
    return result


def compare(baseline, candidate, out, *args):
    """`glide-eval regress --no-progress --baseline BASELINE --candidate CANDIDATE --out OUT ARGS...`."""
    return regress("--baseline", baseline, "--candidate", candidate, "--out", out, *args)


def rewrite_run_json(run_dir: Path, run: dict) -> None:
    """An edited run.json written with its sha256 renewed (regress refuses one whose sha256 fails)."""
    run = {k: v for k, v in run.items() if k != "sha256"}
    (run_dir / "run.json").write_text(json.dumps(dict(run, sha256=sha256_json(run))))


def rows_by_key(report: dict) -> dict:
    return {(r["setting"], r["metric"]): r for r in report["rows"]}


def test_checkpoint_against_itself_is_identical(world, tmp_path):
    out = tmp_path / "self"
    result = compare(world["baseline"], world["good"], out, "--bootstrap", 30, "--images", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["exit_code"] == 0 and report["regressions"] == [] and report["n"] == N
    rows = rows_by_key(report)
    assert len(rows) == 2 * (len(METRICS) + 1)
    for row in rows.values():
        assert row["difference"] == 0 and row["verdict"] == "identical", row
        if row["metric"] != "nan_count":
            assert row["se"] == 0 and row["ci_low"] == row["ci_high"] == 0
    # the baseline values are those the sweep computed over all N samples
    results = pd.read_parquet(world["baseline"] / "results.parquet").set_index("setting")
    for (setting, metric), row in rows.items():
        if metric != "nan_count":
            assert row["baseline"] == pytest.approx(results.loc[setting, metric], rel=1e-12, abs=1e-12)
    assert report["images"]["identical"] and report["images"]["source"] == "saved"
    assert report["images"]["settings"]["cfg-3"] == {
        "n": N,
        "identical": N,
        "max_abs_diff": 0,
        "mean_abs_diff": 0.0,
        "largest": [],
    }
    prov = report["provenance"]
    assert prov["baseline_files"] == prov["candidate_files"]
    assert prov["baseline_files"]["base"] == engine.sha256_file(world["good"] / "base.pt")
    assert prov["baseline_config_hash"] and prov["candidate_config_hash"] and "numpy" in prov["versions"]
    assert json.loads((out / "regress.json").read_text()) == report
    md = (out / "regress.md").read_text()
    assert "no regression" in md and "| cfg-3 | fid | lower |" in md and "All identical: **yes**" in md


def test_degraded_checkpoint_is_caught_and_a_loose_tolerance_passes(world, tmp_path):
    out = tmp_path / "bad"
    result = compare(world["baseline"], world["bad"], out, "--bootstrap", 100, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["exit_code"] == 1 and report["regressions"]
    z = report["z"]
    # Bonferroni over 2 settings x 5 metrics at 95%: two-sided normal quantile of 1 - 0.05/10
    assert z == pytest.approx(2.807, abs=1e-3)
    for (setting, metric), row in rows_by_key(report).items():
        if metric == "nan_count":
            continue
        sign = -1 if row["higher_is_better"] else 1
        assert row["worsening"] == pytest.approx(sign * (row["candidate"] - row["baseline"]))
        assert row["worsening_low"] == pytest.approx(row["worsening"] - z * row["se"])
        is_regression = row["worsening_low"] > row["tolerance"]
        assert (row["verdict"] == "regression") == is_regression, row
        assert (f"{setting}/{metric}" in report["regressions"]) == is_regression
    rows = rows_by_key(report)
    # the degraded model is far from the reference distribution: FID is a regression in both settings
    assert rows[("unguided", "fid")]["verdict"] == rows[("cfg-3", "fid")]["verdict"] == "regression"
    # the candidate's values are the metrics of its own run, computed by the engine directly
    cand_run = out / "candidate"
    features = {}
    for k in range(N // SHARD):
        with np.load(cand_run / "shards" / "cfg-3" / f"{k:05d}.npz") as f:
            for name in ("pool", "logits_unbiased", "clip_scores"):
                features.setdefault(name, []).append(f["feat__" + name])
    config = load_config(cand_run / "config.toml")
    computed = engine.make_components(config, "cpu").compute_metrics(
        {k: np.concatenate(v) for k, v in features.items()}, json.loads((cand_run / "captions.json").read_text()), False
    )
    assert rows[("cfg-3", "fid")]["candidate"] == pytest.approx(computed["fid"], rel=1e-12)
    assert "**REGRESSION**" in (out / "regress.md").read_text()
    # without --json: the Markdown report on stdout, same exit status
    text = regress("--baseline", world["baseline"], "--candidate", world["bad"], "--out", out, "--bootstrap", 100)
    assert text.exit_code == 1 and "| unguided | fid | lower |" in text.stdout and "REGRESSION" in text.stdout

    # loose tolerances (absolute, and relative to the baseline) let it pass; nothing is resampled
    loose = [
        "--tolerance",
        "fid=1e9",
        "--tolerance",
        "is=1e9",
        "--tolerance",
        "precision=100%",
        "--tolerance",
        "recall=100%",
        "--tolerance",
        "clip_score=1000",
    ]
    result = compare(world["baseline"], world["bad"], out, "--bootstrap", 100, "--json", *loose)
    assert result.exit_code == 0, result.output
    assert "6 shards already finished, 0 to run" in result.stderr
    loose_report = json.loads(result.stdout)
    assert loose_report["regressions"] == []
    for key, row in rows_by_key(loose_report).items():
        assert row["difference"] == rows[key]["difference"]  # same samples, same bootstrap seed
        if row["metric"] == "precision":
            assert row["tolerance"] == pytest.approx(abs(row["baseline"]))


def test_smaller_n_uses_the_first_sample_ids_rounded_to_a_batch(world, tmp_path):
    result = compare(world["baseline"], world["good"], tmp_path, "-n", 10, "--bootstrap", 5, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_requested"], report["n"]) == (10, 12)  # batches of 4: samples 0..11
    assert (
        json.loads((tmp_path / "candidate" / "captions.json").read_text())
        == json.loads((world["baseline"] / "captions.json").read_text())[:12]
    )
    assert all(r["verdict"] == "identical" for r in report["rows"])


def test_protocol_mismatches_are_refused(world, tmp_path):
    root = world["root"]
    args = ["--baseline", world["baseline"], "--candidate", world["good"], "--out", tmp_path / "out"]
    steps = write_config(tmp_path, "steps.toml", world["good"], world["reference"], tmp_path / "x", respacing="4")
    result = regress(*args, "--config", steps)
    assert result.exit_code == 2, result.output
    assert "protocol mismatch" in result.output
    assert "sampler.base_respacing: baseline '3', candidate '4'" in result.output

    guidance = write_config(
        tmp_path, "guidance.toml", world["good"], world["reference"], tmp_path / "x", cfg="[3.0, 5.0]"
    )
    result = regress(*args, "--config", guidance)
    assert result.exit_code == 2 and "grid: settings ['cfg-5'] are not in the baseline" in result.output, result.output

    other = list(reversed(CAPTIONS))
    caps = write_config(
        tmp_path,
        "caps.toml",
        world["good"],
        world["reference"],
        tmp_path / "x",
        captions_file="other.txt",
        captions=other,
    )
    result = regress(*args, "--config", caps)
    assert result.exit_code == 2 and "captions: sample 0 is" in result.output, result.output

    # the baseline's own protocol given explicitly is fine, but -n beyond the baseline is refused
    same = write_config(tmp_path, "same.toml", world["good"], world["reference"], tmp_path / "x")
    result = regress(*args, "--config", same, "-n", N + 1)
    assert result.exit_code == 2 and f"features for only {N} samples" in result.output, result.output

    result = regress("--baseline", root / "nowhere", "--candidate", world["good"])
    assert result.exit_code == 2 and "config.toml not found" in result.output
    result = regress("--baseline", world["baseline"], "--candidate", root / "nowhere")
    assert result.exit_code == 2 and "candidate checkpoint folder not found" in result.output
    for bad in (["-n", 1], ["--bootstrap", 1], ["--level", 1.0]):
        result = regress(*args, *bad)
        assert result.exit_code == 2 and bad[0] in result.output, result.output
    result = regress(*args, "--tolerance", "fdi=1")
    assert result.exit_code == 2 and "unknown metric 'fdi'" in result.output
    assert not (tmp_path / "out" / "candidate").exists()  # nothing was sampled


def test_corrupt_baseline_shard_and_other_evaluator_are_refused(world, tmp_path):
    baseline = tmp_path / "baseline"
    shutil.copytree(world["baseline"], baseline)
    npz = baseline / "shards" / "unguided" / "00001.npz"
    npz.write_bytes(npz.read_bytes()[:-5])
    result = regress("--baseline", baseline, "--candidate", world["good"], "--out", tmp_path / "o")
    assert result.exit_code == 2 and "00001.npz is missing, unfinished or corrupt" in result.output, result.output
    # a baseline whose features came from another featurizer cannot be compared
    shutil.rmtree(baseline)
    shutil.copytree(world["baseline"], baseline)
    run = json.loads((baseline / "run.json").read_text())
    run["provenance"]["files"]["test_featurizer"] = "f" * 64
    rewrite_run_json(baseline, run)
    result = regress("--baseline", baseline, "--candidate", world["good"], "--out", tmp_path / "o")
    assert result.exit_code == 2 and "test_featurizer: baseline sha256 ffff" in result.output, result.output


def test_a_baseline_whose_run_json_fails_its_sha256_is_refused_naming_it(world, tmp_path):
    """run.json carries its own sha256: an edited one (here: the featurizer's recorded hash, which would
    otherwise let another featurizer's features pass as the baseline's) is refused before anything runs."""
    baseline = tmp_path / "baseline"
    shutil.copytree(world["baseline"], baseline)
    run = json.loads((baseline / "run.json").read_text())
    run["provenance"]["files"]["test_featurizer"] = "f" * 64
    (baseline / "run.json").write_text(json.dumps(run))
    result = regress("--baseline", baseline, "--candidate", world["good"], "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert f"{baseline / 'run.json'} is damaged (its content does not match its sha256)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_images_are_regenerated_when_the_baseline_did_not_save_them(world, tmp_path):
    baseline = tmp_path / "baseline"
    shutil.copytree(world["baseline"], baseline, ignore=shutil.ignore_patterns("images"))
    result = compare(baseline, world["bad"], tmp_path / "o", "-n", 8, "--bootstrap", 5, "--images", "--json")
    assert result.exit_code in (0, 1), result.output
    images = json.loads(result.stdout)["images"]
    assert images["source"] == "regenerated" and not images["identical"]
    # the regenerated baseline reproduces its stored features exactly
    assert all(v == 0 for r in images["reproduction"].values() for v in r.values())
    # the reported pixel differences are those of the saved PNGs, computed here directly
    from PIL import Image

    def png(run, i):
        return np.asarray(Image.open(run / "images" / "cfg-3" / f"{i:06d}.png")).astype(int)

    diffs = [np.abs(png(world["baseline"], i) - png(tmp_path / "o" / "candidate", i)).max() for i in range(8)]
    r = images["settings"]["cfg-3"]
    assert r["max_abs_diff"] == max(diffs) > 0 and r["identical"] == sum(d == 0 for d in diffs)
    assert r["largest"][0]["max_abs_diff"] == max(diffs)
    # changed baseline checkpoint files: regeneration is refused
    run = json.loads((baseline / "run.json").read_text())
    run["provenance"]["files"]["base"] = "0" * 64
    rewrite_run_json(baseline, run)
    result = compare(baseline, world["good"], tmp_path / "p", "-n", 4, "--bootstrap", 5, "--images")
    assert result.exit_code == 2 and "cannot regenerate the baseline images" in result.output, result.output


def test_a_candidate_folder_the_engine_ignores_is_refused(world, tmp_path):
    # an engine that reads no file from the candidate folder (the sweep's numpy fake)
    import test_sweep as sweep_tests

    config = load_config(sweep_tests.write_config(tmp_path, n=6, shard_size=3, cfg="[]", clip="[]"))
    run_sweep(config, progress=False, log=lambda m: None)
    result = regress("--baseline", config.output_dir, "--candidate", world["bad"], "--out", tmp_path / "o")
    assert result.exit_code == 2 and "loads none of the files in the candidate folder" in result.output, result.output
    # a folder holding the baseline's checkpoint and other files, of which the run would load none
    folder = tmp_path / "copy"
    shutil.copytree(world["good"], folder)
    shutil.copy(world["bad"] / "base.pt", folder / "base-new.pt")
    result = regress("--baseline", world["baseline"], "--candidate", folder, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "would load exactly the baseline's files" in result.output, result.output
    assert "base-new.pt" in result.output


def test_a_baseline_with_steps_n_compares_its_steps_settings_on_their_own_samples(world, tmp_path):
    """[grid] steps_n = 8 of 24: the steps setting is compared on its 8 samples, the others on 24."""
    grid = '[3.0]\nsteps = ["2"]\nsteps_methods = ["ddim"]\nsteps_guidance = "unguided"\nsteps_n = 8'
    path = write_config(tmp_path, "steps.toml", world["good"], world["reference"], tmp_path / "baseline", cfg=grid)
    run_sweep(load_config(path), save_images="png", progress=False, log=lambda m: None)
    result = compare(tmp_path / "baseline", world["good"], tmp_path / "out", "--bootstrap", 5, "--images", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == N and report["n_fewer"] == {"steps-ddim-2": 8}
    assert {r["setting"] for r in report["rows"]} == {"unguided", "cfg-3", "steps-ddim-2"}
    assert all(r["verdict"] == "identical" for r in report["rows"])
    assert report["images"]["settings"]["steps-ddim-2"]["identical"] == 8
    assert report["images"]["settings"]["cfg-3"]["identical"] == N
    results = pd.read_parquet(tmp_path / "baseline" / "results.parquet").set_index("setting")
    row = rows_by_key(report)[("steps-ddim-2", "fid")]
    assert results.loc["steps-ddim-2", "n_samples"] == 8
    assert row["baseline"] == pytest.approx(results.loc["steps-ddim-2", "fid"], rel=1e-12)
    assert "; steps-ddim-2: 8" in (tmp_path / "out" / "regress.md").read_text()
    # -n below steps_n: every setting on the same first samples
    small = compare(tmp_path / "baseline", world["good"], tmp_path / "small", "-n", 4, "--bootstrap", 5, "--json")
    assert small.exit_code == 0, small.output
    assert json.loads(small.stdout)["n_fewer"] == {} and json.loads(small.stdout)["n"] == 4
