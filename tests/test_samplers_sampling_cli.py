"""`glide-eval sample` on tiny random-weight models (the official structure, small widths)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from glide_eval.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def run(args):
    result = CliRunner().invoke(main, ["sample", *args], catch_exceptions=False)
    return result


# two 16px samples of "a red cube" from the tiny random-weight models, seed 4, 3 steps
CUBE = ["--prompt", "a red cube", "--random-weights", "--tiny", "--steps", "3", "--num-samples", "2", "--seed", "4"]


def test_sample_writes_png_and_provenance_sidecar(tmp_path):
    out = tmp_path / "cube.png"
    result = run([*CUBE, "--out", str(out), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    image = np.asarray(Image.open(out))
    assert image.shape == (16, 32, 3)  # two 16px samples side by side
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == record
    assert record["prompt"] == "a red cube" and record["seed"] == 4 and record["respacing"] == "3"
    assert record["guidance"] == {"kind": "cfg", "scale": 3.0} and record["nan_samples"] == []
    assert record["checkpoint_sha256"] == {"base": "random"} and "torch" in record["versions"]
    assert record["model_options"]["base"]["image_size"] == 16

    again = tmp_path / "again.png"
    assert run([*CUBE, "--out", str(again), "--no-progress"]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(again)), image)  # same seed, same images


def test_sample_inpaints_keeping_known_pixels(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "inpainted.png"
    result = run(
        [
            "--prompt",
            "grass",
            "--random-weights",
            "--tiny",
            "--steps",
            "2",
            "--inpaint",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert result.exit_code == 0, result.output
    got = np.asarray(Image.open(out)).astype(int)
    source = np.asarray(Image.open(tmp_path / "img.png")).astype(int)
    assert np.abs(got[:, :8] - source[:, :8]).max() <= 1
    assert np.abs(got[:, 8:] - source[:, 8:]).mean() > 10


def test_sample_rejects_bad_arguments(tmp_path):
    out = str(tmp_path / "x.png")
    assert "unknown guidance" in run(["--prompt", "x", "--guidance", "foo:1", "--random-weights", "--out", out]).output
    assert "unknown respacing" in run(["--prompt", "x", "--steps", "ten", "--random-weights", "--out", out]).output
    only_image = ["--prompt", "x", "--random-weights", "--inpaint", __file__, "--out", out]
    assert "--inpaint and --mask" in run(only_image).output
    result = CliRunner(env={"GLIDE_CHECKPOINTS": None}).invoke(main, ["sample", "--prompt", "x", "--out", out])
    assert result.exit_code != 0 and "no checkpoints" in result.output
