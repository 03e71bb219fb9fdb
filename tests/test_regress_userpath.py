"""Issue 19, item 6: `regress` on a user's files. A --config subset without CLIP settings is
compared (the noised CLIP it does not load is not an evaluation file), -n too small for a
metric fails before sampling, and the baseline's checkpoint files copied to another folder
(beside other released files) are a valid candidate. Toy engine, random toy weights."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from toy_runs import use_random_toy_world, write_toy_config

from glide_eval.cli import main
from glide_eval.sweep.config import load_config
from glide_eval.sweep.run import run_sweep

REST = """[grid]
unguided = false
cfg = [3.0]
clip = {clip}
[metrics]
names = ["fid", "precision", "recall"]
reference = "{reference}"
reference_n = 16
"""


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("userpath")
    mp = pytest.MonkeyPatch()
    use_random_toy_world(root, mp)

    def write(name, batch=4, clip="[1.0]", out="baseline", ckpt=root / "assets"):
        return write_toy_config(
            root,
            REST.format(clip=clip, reference=root / "reference.npz"),
            name=name,
            output_dir=root / out,
            batch_size=batch,
            n=8,
            models=f'checkpoints = "{ckpt}"',
            sampler='method = "ddim"',
            respacing="2",
        )

    run_sweep(load_config(write("baseline.toml")), progress=False, log=lambda m: None)
    yield root, write
    mp.undo()


def regress(*args):
    return CliRunner().invoke(main, ["regress", "--no-progress", "--bootstrap", "5", "--json", *map(str, args)])


def test_config_subset_without_clip_settings_is_compared(baseline, tmp_path):
    root, write = baseline
    subset = write("subset.toml", clip="[]")
    result = regress(
        "--baseline", root / "baseline", "--candidate", root / "assets", "--config", subset, "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"] == ["cfg-3"]
    assert "toy_noised_clip" not in report["provenance"]["candidate_files"]
    assert "toy_noised_clip" in report["provenance"]["baseline_files"]
    assert all(r["verdict"] == "identical" for r in report["rows"])


def test_too_few_samples_for_precision_fail_before_sampling(baseline, tmp_path):
    root, write = baseline
    small = write("small.toml", batch=2, out="small")
    run_sweep(load_config(small), progress=False, log=lambda m: None)
    result = regress("--baseline", root / "small", "--candidate", root / "assets", "-n", 2, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "2 samples, too few: precision needs 4, recall needs 4" in result.output
    assert not (tmp_path / "o" / "candidate").exists()  # nothing sampled


def test_same_checkpoints_in_another_folder_with_other_released_files(baseline, tmp_path):
    root, _ = baseline
    copy = tmp_path / "copy"
    shutil.copytree(root / "assets", copy)  # also holds upsample.pt, which a 16px run does not load
    result = regress("--baseline", root / "baseline", "--candidate", copy, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert all(r["verdict"] == "identical" for r in json.loads(result.stdout)["rows"])


def test_two_candidates_with_one_folder_name_get_their_own_outputs(baseline, tmp_path, monkeypatch):
    """Issue 31: the default output folder is keyed by the candidate files' content, so
    elsewhere/ckpt and other/ckpt (other weights) do not share (and overwrite) one report; the same
    files again resume their own folder. Adding --images then reuses the finished shards."""
    import torch

    root, _ = baseline
    monkeypatch.chdir(tmp_path)
    for parent in ("elsewhere", "other"):
        shutil.copytree(root / "assets", tmp_path / parent / "ckpt")
    base = tmp_path / "other" / "ckpt" / "base.pt"
    state = torch.load(base, weights_only=True)
    state["state_dict"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, base)
    first = regress("--baseline", root / "baseline", "--candidate", tmp_path / "elsewhere" / "ckpt")
    second = regress("--baseline", root / "baseline", "--candidate", tmp_path / "other" / "ckpt")
    assert first.exit_code == 0 and second.exit_code in (0, 1), second.output
    out_a, out_b = (json.loads(r.stdout)["out_dir"] for r in (first, second))
    assert out_a != out_b and {p.name[:5] for p in (tmp_path / "runs" / "regress").iterdir()} == {"ckpt-"}
    assert json.loads((tmp_path / out_a / "regress.json").read_text())["candidate"].startswith(
        str(tmp_path / "elsewhere")
    )
    assert json.loads((tmp_path / out_b / "regress.json").read_text())["candidate"].startswith(str(tmp_path / "other"))
    # the same (other) files again, now with --images: the same folder, no shard sampled again, and
    # the images (not saved the first time) made beside the kept shards with the candidate's weights
    again = CliRunner().invoke(
        main,
        [
            "regress",
            "--no-progress",
            "--json",
            "--images",
            "--baseline",
            str(root / "baseline"),
            "--candidate",
            str(tmp_path / "other" / "ckpt"),
        ],
    )
    assert again.exit_code in (0, 1), again.output
    report = json.loads(again.stdout)
    assert report["out_dir"] == out_b and "candidate: 4 shards already finished, 0 to run" in again.stderr
    assert "damaged" not in again.stderr
    images = report["images"]
    assert not images["identical"]  # other weights: other pixels than the baseline's
    # the images were made with the candidate's weights: their features are the kept shards' exactly
    assert all(v == 0 for r in images["candidate_reproduction"].values() for v in r.values())
