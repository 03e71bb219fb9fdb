"""Issue 31: the real user's path, round 2. The reference statistics are keyed by the images'
content, `--check` names every problem in one pass, and the messages say the way forward."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image
from test_preflight import glide_config, make_coco, save_tiny_base, tiny_official

from glide_eval.cli import main


def _glide_world(tmp_path, monkeypatch, allow_unknown_inception=True, reference="", truncate=None):
    from metrics.testing import make_random_inception

    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    tiny_official(monkeypatch)
    (tmp_path / "ckpt").mkdir()
    save_tiny_base(tmp_path / "ckpt" / "base.pt")
    make_coco(tmp_path / "coco", truncate=truncate)
    inception = make_random_inception(tmp_path)
    text = glide_config(tmp_path, inception, allow_unknown_inception=allow_unknown_inception)
    text = text.replace(f'reference = "{tmp_path / "reference.npz"}"', f'reference = "{reference}"')
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_an_image_changed_under_its_name_rebuilds_the_sweeps_reference(tmp_path, monkeypatch):
    """The sweep's own cache ([metrics] reference empty): an image replaced under its name rebuilds it,
    saying why, and the images' fingerprint is in the provenance."""
    config = _glide_world(tmp_path, monkeypatch)
    first = CliRunner().invoke(main, ["sweep", str(config), "--check", "--json"])
    assert first.exit_code == 0, first.output
    fingerprint = json.loads(first.stdout)["provenance"]["reference"]["images_sha256"]
    assert len(fingerprint) == 64
    again = CliRunner().invoke(main, ["sweep", str(config), "--check", "--json"])
    assert again.exit_code == 0 and "stale" not in again.output  # the same images: reused
    image = tmp_path / "coco" / "val2014" / "COCO_val2014_000000000002.jpg"
    with Image.open(image) as img:
        Image.eval(img, lambda v: 255 - v).save(image, format="JPEG")
    changed = CliRunner().invoke(main, ["sweep", str(config), "--check", "--json"])
    assert changed.exit_code == 0, changed.output
    assert "is stale" in changed.stderr and "images_sha256" in changed.stderr and "content changed" in changed.stderr
    assert json.loads(changed.stdout)["provenance"]["reference"]["images_sha256"] not in (None, fingerprint)


def test_check_names_a_corrupt_checkpoint_an_unknown_inception_and_a_truncated_jpeg_in_one_run(tmp_path, monkeypatch):
    """Issue 31: the images are decoded even though the Inception file is refused, and the message
    ends with the way forward for each kind of problem."""
    config = _glide_world(tmp_path, monkeypatch, allow_unknown_inception=False, truncate=3)
    base = tmp_path / "ckpt" / "base.pt"
    base.write_bytes(base.read_bytes()[:4096])  # a truncated download
    result = CliRunner().invoke(main, ["sweep", str(config), "--check"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    out = result.output
    assert "3 problems" in out
    assert f"{base}: not a readable PyTorch checkpoint" in out and "weights_only" not in out
    assert "[weights.inception]" in out and "sha256 starts with 6726825d" in out
    assert "1 unreadable image: " in out and "COCO_val2014_000000000003.jpg" in out
    ways = out[out.index("Ways forward:") :]
    assert "coco-reference --ids IDS.txt --out REF.npz" in ways and "--allow-unknown-inception" in ways
    assert "download it again" in ways
    assert not (tmp_path / "out").exists()  # a failed --check leaves no run folder behind
