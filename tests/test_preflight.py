"""Issue 19: the user's path through a sweep. The pre-flight opens every file before sampling
(and reports every problem at once), user mistakes end in one-paragraph errors, the config
and generation hashes follow file content rather than folders, one rule for relative paths,
and a user's reference file is never overwritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_sweep import env_with_tests_on_path, write_config
from test_sweep_toy import make_random_toy_assets

from glide_eval.cli import main
from glide_eval.sweep.config import load_config
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.sweep.preflight import PreflightError, preflight
from glide_eval.sweep.references import reference_stats
from glide_eval.sweep.rundir import generation_hash
from metrics.reference import ReferenceStats
from samplers import checkpoints
from samplers.checkpoints import CheckpointMismatchError, CheckpointReadError, check_checkpoint_file
from samplers.model_configs import official_options
from samplers.pipeline import TINY_OVERRIDES, load_glide_models


def tiny_official(monkeypatch) -> None:
    """Make the 'official' GLIDE options the tiny stand-ins', so that small files play released ones."""

    def tiny(name):
        stage = "upsample" if name.startswith("upsample") else "base"
        return {**official_options(name), **TINY_OVERRIDES[stage]}

    monkeypatch.setattr(checkpoints, "official_options", tiny)


def save_tiny_base(path, rename: str | None = None) -> dict:
    state = load_glide_models(None, random_weights=True, tiny=True).base.state_dict()
    if rename:
        state[rename + ".renamed"] = state.pop(rename)
    torch.save(state, path)
    return state


def make_coco(root, n_images=5, truncate: int | None = None):
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    images, anns = [], []
    for i in range(n_images):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(root / "val2014" / name)
        if i == truncate:
            data = (root / "val2014" / name).read_bytes()
            (root / "val2014" / name).write_bytes(data[: len(data) // 2])
        images.append({"id": i, "file_name": name})
        anns += [{"id": 100 + 2 * i + j, "image_id": i, "caption": f"photo {i} of thing {j}"} for j in range(2)]
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))


def test_check_checkpoint_file_names_renamed_key_and_truncated_file(tmp_path, monkeypatch):
    tiny_official(monkeypatch)
    good = tmp_path / "good.pt"
    state = save_tiny_base(good)
    assert len(check_checkpoint_file("base", good)) == 64
    key = next(iter(state))
    save_tiny_base(tmp_path / "renamed.pt", rename=key)
    with pytest.raises(CheckpointMismatchError) as e:
        check_checkpoint_file("base", tmp_path / "renamed.pt")
    assert str(tmp_path / "renamed.pt") in str(e.value) and f"missing keys (1): {key}" in str(e.value)
    assert f"{key}.renamed" in str(e.value)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointReadError, match=str(tmp_path / "cut.pt")):
        check_checkpoint_file("base", tmp_path / "cut.pt")


def glide_config(tmp_path, inception, extra: str = "", allow_unknown_inception: bool = True) -> str:
    """A GLIDE sweep over tiny stand-ins; random Inception weights are allowed unless said otherwise."""
    return f"""
[run]
output_dir = "{tmp_path / "out"}"
batch_size = 2
shard_size = 2
device = "cpu"
[models]
engine = "glide"
checkpoints = "{tmp_path / "ckpt"}"
[weights]
inception = "{inception}"
allow_unknown_inception = {str(allow_unknown_inception).lower()}
[sampler]
base_respacing = "2"
[captions]
source = "coco"
path = "{tmp_path / "coco"}"
n = 4
[grid]
unguided = true
[metrics]
names = ["fid"]
reference = "{tmp_path / "reference.npz"}"
{extra}
"""


def test_sweep_fails_before_sampling_listing_every_bad_file(tmp_path, monkeypatch):
    from model_files import make_random_inception

    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    tiny_official(monkeypatch)
    (tmp_path / "ckpt").mkdir()
    save_tiny_base(tmp_path / "ckpt" / "base.pt", rename="time_embed.0.weight")
    make_coco(tmp_path / "coco", truncate=3)
    inception = make_random_inception(tmp_path)
    path = tmp_path / "sweep.toml"
    path.write_text(glide_config(tmp_path, inception))
    result = CliRunner().invoke(main, ["sweep", str(path), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 problems" in result.output and "nothing was sampled" in result.output
    assert f"{tmp_path / 'ckpt' / 'base.pt'}: does not match the model" in result.output
    assert "missing keys (1): time_embed.0.weight; unexpected keys (1): time_embed.0.weight.renamed" in result.output
    assert "COCO_val2014_000000000003.jpg" in result.output  # the truncated image, by name
    assert not (tmp_path / "out" / "shards").exists()  # no sample drawn
    assert not (tmp_path / "reference.npz").exists()
    # --check reports the same problems and samples nothing either
    checked = CliRunner().invoke(main, ["sweep", str(path), "--check"])
    assert checked.exit_code == 1 and "COCO_val2014_000000000003.jpg" in checked.output
    # with the files fixed, --check passes, and it built the reference before any sampling
    save_tiny_base(tmp_path / "ckpt" / "base.pt")
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    shutil.rmtree(tmp_path / "coco")
    make_coco(tmp_path / "coco")
    checked = CliRunner().invoke(main, ["sweep", str(path), "--check"])
    assert checked.exit_code == 0, checked.output
    assert (tmp_path / "reference.npz").is_file() and not (tmp_path / "out" / "shards").exists()


def test_missing_files_and_unwritable_output_are_listed_together(tmp_path, monkeypatch):
    (tmp_path / "out").write_text("a file where the run directory should be")
    (tmp_path / "ckpt").mkdir()
    path = tmp_path / "sweep.toml"
    path.write_text(glide_config(tmp_path, tmp_path / "absent_inception.pth"))
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    out = result.output
    assert "[run.output_dir]" in out and str(tmp_path / "out") in out
    assert "base.pt" in out and "[weights.inception]" in out and "[captions.path]" in out


def test_check_lists_an_inception_file_that_is_not_torch_fidelitys(tmp_path, monkeypatch):
    """A well-formed Inception file with other weights (random ones, in torch-fidelity's format and
    under its file name) is a [weights.inception] problem of the pre-flight, named with its sha256,
    unless allowed; the sha256 is computed here independently of the extractor."""
    import hashlib

    from model_files import make_random_inception

    from metrics.extractors import INCEPTION_SHA256_PREFIX

    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    tiny_official(monkeypatch)
    (tmp_path / "ckpt").mkdir()
    save_tiny_base(tmp_path / "ckpt" / "base.pt")
    make_coco(tmp_path / "coco")
    inception = make_random_inception(tmp_path)
    sha = hashlib.sha256(inception.read_bytes()).hexdigest()
    assert not sha.startswith(INCEPTION_SHA256_PREFIX)
    path = tmp_path / "sweep.toml"
    path.write_text(glide_config(tmp_path, inception, allow_unknown_inception=False))
    result = CliRunner().invoke(main, ["sweep", str(path), "--check"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    line = next(x for x in result.output.splitlines() if "[weights.inception]" in x)
    assert "1 problem " in result.output and str(inception) in line and sha[:16] in line
    assert f"sha256 starts with {INCEPTION_SHA256_PREFIX}" in line and "--allow-unknown-inception" in line
    assert not (tmp_path / "reference.npz").exists()  # stopped before the reference was built
    # a sweep stops the same way before sampling; --allow-unknown-inception lets both through
    ran = CliRunner().invoke(main, ["sweep", str(path), "--no-progress"])
    assert ran.exit_code == 1 and "[weights.inception]" in ran.output and not (tmp_path / "out" / "shards").exists()
    allowed = CliRunner().invoke(main, ["sweep", str(path), "--check", "--allow-unknown-inception", "--json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["provenance"]["files"]["inception"] == sha


class Extractor:
    name, weights_sha256 = "fake-features", "a" * 64


def saved_reference(path, **meta) -> bytes:
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(8, 3))
    full = {"extractor": "fake-features", "extractor_sha256": "a" * 64, **meta}
    ReferenceStats(mu=pool.mean(0), sigma=np.cov(pool.T), n=8, pool=pool, meta=full).save(path)
    return path.read_bytes()


def test_user_reference_is_used_as_given_never_rebuilt(tmp_path):
    expected = {"extractor": "fake-features", "extractor_sha256": "a" * 64, "resolution": 64, "crop": "center"}
    path = tmp_path / "mine.npz"
    before = saved_reference(path, resolution=64, crop="adm", n_images=8)
    logs = []

    def build():
        raise AssertionError("a user's reference must not be rebuilt")

    stats = reference_stats(str(path), tmp_path / "cache.npz", expected, build, logs.append)
    assert stats.meta["crop"] == "adm" and path.read_bytes() == before
    assert len(logs) == 1 and "crop: file 'adm', sweep 'center'" in logs[0]
    # another extractor or resolution: refused, the difference named, the file untouched
    for key, value in (("extractor_sha256", "b" * 64), ("resolution", 256)):
        with pytest.raises(MissingComponentError, match=f"{key}: file .*, sweep {value!r}"):
            reference_stats(str(path), tmp_path / "cache.npz", {**expected, key: value}, build, logs.append)
        assert path.read_bytes() == before
    # the sweep's own cache (no file given) is rebuilt when stale
    cache = tmp_path / "cache.npz"
    saved_reference(cache, resolution=64, crop="adm")
    rebuilt = reference_stats("", cache, expected, lambda: ReferenceStats.load(path), logs.append)
    assert rebuilt.meta["crop"] == "adm" and "stale" in logs[-1]
    # a given file that does not exist yet is built there
    fresh = tmp_path / "new.npz"
    reference_stats(str(fresh), cache, expected, lambda: ReferenceStats.load(path), logs.append)
    assert ReferenceStats.load(fresh).n == 8


TOY = """
[run]
output_dir = "{out}"
batch_size = 3
shard_size = 3
device = "cpu"
[models]
engine = "toy"
checkpoints = "{ckpt}"
[sampler]
resolution = 16
method = "ddim"
base_respacing = "2"
[captions]
source = "toy"
n = 3
[metrics]
names = ["is"]
"""


def test_same_files_in_another_folder_resume_without_force(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    make_random_toy_assets(tmp_path / "a")
    monkeypatch.setenv("GLIDE_EVAL_TOY_ASSETS", str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for folder in ("a", "b"):
        (tmp_path / f"{folder}.toml").write_text(TOY.format(out=tmp_path / "out", ckpt=tmp_path / folder))
    runner = CliRunner()
    first = runner.invoke(main, ["sweep", str(tmp_path / "a.toml"), "--no-progress", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["provenance"]["tf32"] is False
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    assert a.models.checkpoints != b.models.checkpoints and a.config_hash == b.config_hash
    again = runner.invoke(main, ["sweep", str(tmp_path / "b.toml"), "--no-progress", "--json"])
    assert again.exit_code == 0, again.output
    assert '"shards_run": 0' in again.output and '"shards_skipped": 1' in again.output
    # nothing is damaged: no word says so (issue 31); the merge says what changed instead
    assert "damaged" not in again.output, again.output
    assert "config.toml was rewritten for this run since the last merge" in again.output
    # other content under the same name is refused without --force, naming the file
    base = tmp_path / "b" / "base.pt"
    state = torch.load(base, weights_only=True)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, base)
    refused = runner.invoke(main, ["sweep", str(tmp_path / "b.toml"), "--no-progress"])
    assert refused.exit_code == 1 and "toy_base: sha256" in refused.output and "Traceback" not in refused.output


def test_default_config_keeps_its_hashes(tmp_path):
    """The shipped default sweep's run directories stay valid: both hashes as in the run that
    README's default-sweep numbers come from (runs/default/results.csv's config_hash and
    generation_hash columns). Issue 30's pinned retrain of the toy weights and the quadN steps
    section changed both, so run directories of the earlier default (config d4c037e2...,
    generation 048a77e5...) are refused, as they must be."""
    import glide_eval

    config = load_config(Path(glide_eval.__file__).parent / "configs" / "default.toml")
    assert config.config_hash == "a0928e9372d11ecdae81f589c3f047b64928affbed74281e3849b2876c851907"
    files = {
        "toy_base": "8a7b1d0aa25a4753ccd7beb01564be12cc9d2eb992b59e20c5c7a5fffce6b13a",
        "toy_classifier": "7c5b04861b5c234960d0cbd1905a58210cb5109344ae652cde2f603a176da56b",
        "toy_clip": "78473628de965ba1f2ab4181e5f532e557f5cc3d26a627b67a2f56f62aa2df26",
        "toy_noised_clip": "fe6aed759621b0ff483aa4ae6723d501a03980831838040513edcf9fb0c2a6c7",
    }
    assert generation_hash(config, {"files": files}) == (
        "3506fc1caf1ab6eb8c421006f8cb1615d942f5e71a8931b5d619bf225cb0cdda"
    )


def test_relative_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "work").mkdir()
    path = tmp_path / "configs" / "mini.toml"
    path.write_text('[models]\nengine = "glide"\n[weights]\ninception = "weights/inception.pth"\n')
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GLIDE_CHECKPOINTS", "ckpt")
    monkeypatch.setenv("GLIDE_EVAL_COCO", "~/coco")
    config = load_config("../configs/mini.toml")
    assert config.models.checkpoints == str(tmp_path / "work" / "ckpt")
    assert config.weights.inception == str(tmp_path / "work" / "weights" / "inception.pth")
    assert config.captions.path == str((tmp_path / "work").home() / "coco")
    assert config.run.output_dir == str(tmp_path / "work" / "runs" / "sweep")
    # flags too
    result = CliRunner().invoke(
        main, ["sweep", "../configs/mini.toml", "--checkpoints", "other", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output


def test_preflight_on_the_toy_engine_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    make_random_toy_assets(tmp_path / "a")
    monkeypatch.setenv("GLIDE_EVAL_TOY_ASSETS", str(tmp_path / "a"))
    (tmp_path / "c.toml").write_text(TOY.format(out=tmp_path / "out", ckpt=tmp_path / "a"))
    ready = preflight(load_config(tmp_path / "c.toml"), "cpu")
    assert len(ready.captions) == 3 and set(ready.components.provenance["files"]) >= {"toy_base"}
    (tmp_path / "d.toml").write_text(TOY.format(out=tmp_path / "out", ckpt=tmp_path / "absent"))
    with pytest.raises(PreflightError, match="toy world's trained models are missing"):
        preflight(load_config(tmp_path / "d.toml"), "cpu")


def test_sample_checks_its_output_before_sampling(tmp_path, monkeypatch):
    import glide_eval.cli.sample as sample_cli

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking --out")

    monkeypatch.setattr(sample_cli, "sample_images", no_sampling)
    (tmp_path / "file").write_text("not a folder")
    args = ["sample", "--prompt", "a cube", "--random-weights", "--tiny", "--steps", "2"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "file" / "x.png")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{tmp_path / 'file' / 'x.png'}: cannot write files in the folder {tmp_path / 'file'}" in result.output


def test_a_failed_preflight_on_rank_0_stops_every_rank(tmp_path):
    """Two ranks started by hand (no torchrun agent to kill the survivor): only rank 0 opens the
    reference, it is unreadable; rank 0 reports the problem, and rank 1 -- already past its own
    pre-flight -- stops on its own with rank 0's message instead of waiting at a barrier."""
    path = write_config(tmp_path, n=4, extra=f'unreadable_reference = "{tmp_path / "ref.npz"}"')
    env = dict(
        env_with_tests_on_path(),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        OMP_NUM_THREADS="1",
        MASTER_PORT=str(33500 + os.getpid() % 1000),
    )
    cmd = [sys.executable, "-m", "glide_eval", "sweep", str(path), "--no-progress"]
    procs = [
        subprocess.Popen(
            cmd,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in (0, 1)
    ]
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [1, 1], errs
    problem = f"[metrics.reference] {tmp_path / 'ref.npz'}: cannot be read"
    assert "1 problem " in errs[0] and problem in errs[0] and "Traceback" not in errs[0]
    assert "rank 0 stopped: 1 problem " in errs[1] and problem in errs[1] and "Traceback" not in errs[1]
    assert not (tmp_path / "out" / "shards").exists()
