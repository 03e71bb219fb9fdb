"""`glide-eval regress` on the bundled toy world (trained toy GLIDE models and evaluation networks).

Skipped when the toy weights are not available (glide_eval/assets or $GLIDE_EVAL_TOY_ASSETS).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from toy_runs import write_toy_config

from glide_eval.cli import main
from glide_eval.sweep.config import load_config
from glide_eval.sweep.run import run_sweep

N = 16


def toy_assets() -> Path:
    try:
        from glide_eval.toy import models

        for name in ("base", "classifier", "clip"):
            models.weight_path(name)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"toy world weights not available: {e}")
    return models.assets_dir()


@pytest.fixture(scope="module")
def toy_baseline(tmp_path_factory):
    assets = toy_assets()
    root = tmp_path_factory.mktemp("toy")
    path = write_toy_config(
        root,
        output_dir=root / "baseline",
        batch_size=8,
        respacing="8",
        n=N,
        run="seed = 3",
        models=f'checkpoints = "{assets}"',
        rest=f"""[grid]
unguided = false
cfg = [3.0]
[metrics]
reference = "{root / "reference.npz"}"
reference_n = 64
""",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(load_config(path), progress=False, log=lambda m: None)
        yield {"root": root, "assets": assets, "baseline": root / "baseline"}
    finally:
        torch.set_num_threads(threads)


def compare(baseline, candidate, out, *args):
    """`glide-eval regress --no-progress --json --baseline BASELINE --candidate CANDIDATE --out OUT ARGS...`."""
    args = ["--baseline", baseline, "--candidate", candidate, "--out", out, *args]
    return CliRunner().invoke(main, ["regress", "--no-progress", "--json", *map(str, args)])


def test_toy_checkpoint_against_itself_and_a_degraded_copy(toy_baseline, tmp_path):
    result = compare(toy_baseline["baseline"], toy_baseline["assets"], tmp_path / "self", "--bootstrap", 20)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(r["difference"] == 0 and r["verdict"] == "identical" for r in report["rows"])

    degraded = tmp_path / "degraded"
    shutil.copytree(toy_baseline["assets"], degraded)
    blob = torch.load(degraded / "base.pt", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    blob["state_dict"] = {
        k: (v.float() + 0.5 * v.float().std().nan_to_num() * torch.randn(v.shape, generator=gen)).to(v.dtype)
        if v.is_floating_point() and v.numel() > 1
        else v
        for k, v in blob["state_dict"].items()
    }
    torch.save(blob, degraded / "base.pt")
    result = compare(toy_baseline["baseline"], degraded, tmp_path / "bad", "--bootstrap", 50)
    if result.exit_code == 2 and "does the engine read [models.checkpoints]" in result.output:
        pytest.skip("the toy engine does not read its weights from [models.checkpoints] yet")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["regressions"] and all(r.startswith("cfg-3/") for r in report["regressions"])
    # the toy engine gives paired differences: the SE is metrics.paired_differences' on both sides' features
    assert "influence" in report["interval_method"]
    from metrics import paired_differences
    from metrics.calculate import Options
    from metrics.reference import ReferenceStats

    def side(run_dir):
        import numpy as np

        arrays = {}
        for npz in sorted((Path(run_dir) / "shards" / "cfg-3").glob("*.npz")):
            with np.load(npz) as f:
                for name in ("pool", "logits_unbiased", "clip_scores"):
                    arrays.setdefault(name, []).append(f["feat__" + name])
        return {k: np.concatenate(v) for k, v in arrays.items()}

    expected = paired_differences(
        side(toy_baseline["baseline"]),
        side(tmp_path / "bad" / "candidate"),
        ReferenceStats.load(toy_baseline["root"] / "reference.npz"),
        ["fid", "is", "precision", "recall", "clip_score"],
        comparisons=5,
        options=Options(isc_splits=10, fid_infinity_seed=3),
    )
    for row in report["rows"]:
        if row["metric"] != "nan_count":
            assert row["se"] == pytest.approx(expected[row["metric"]]["se"], rel=1e-9), row["metric"]
            assert row["difference"] == pytest.approx(expected[row["metric"]]["difference"], rel=1e-9, abs=1e-12)
