"""Issue 31: the real user's path, round 2. The reference statistics are keyed by the images'
content, `--check` names every problem in one pass, and the messages say the way forward."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_preflight import glide_config, make_coco, save_tiny_base, tiny_official

from glide_eval.cli import main


def _glide_world(tmp_path, monkeypatch, allow_unknown_inception=True, reference="", truncate=None):
    from model_files import make_random_inception

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
    assert f"[models.checkpoints] {base}: not a readable PyTorch checkpoint" in out and "weights_only" not in out
    assert "[weights.inception]" in out and "sha256 starts with 6726825d" in out
    assert "1 unreadable image: " in out and "COCO_val2014_000000000003.jpg" in out
    ways = out[out.index("Ways forward:") :]
    assert "coco-reference --ids IDS.txt --out REF.npz" in ways and "--allow-unknown-inception" in ways
    assert "download the released file again" in ways
    assert not (tmp_path / "out").exists()  # a failed --check leaves no run folder behind


def test_ratings_equal_to_1e_9_share_a_rank():
    from human_eval.elo import _ranks

    ratings = np.array([[0.0, 2.8e-14, -4e-10, 100.0, 100.0 + 5e-10, 50.0, 50.0 + 1e-6]])
    # by hand: 100 and 100+5e-10 are one rank (1); 50+1e-6 is above 50 (a real difference); the three
    # ratings within 1e-9 of 0 share rank 5
    assert _ranks(ratings).tolist() == [[5, 5, 5, 1, 1, 4, 3]]


def _judgments_csv(path, rows):
    path.write_text("model_a,model_b,winner\n" + "".join(f"{a},{b},{w}\n" for a, b, w in rows))
    return path


def test_elo_output_has_tied_ranks_no_negative_zero_and_names_drop_invalid(tmp_path):
    """An anchored fit where cfg:1.5 is exactly as strong as unguided: both rank 2 (not by float
    noise), and no "-0.0" is printed. An invalid row's error names --drop-invalid."""
    rows = [("unguided", "cfg:1.5", w) for w in "abab"] + [("cfg:3.0", "unguided", "a")] * 3
    rows += [("cfg:3.0", "cfg:1.5", "a")] * 3 + [("cfg:3.0", "unguided", "b"), ("cfg:1.5", "cfg:3.0", "a")]
    path = _judgments_csv(tmp_path / "j.csv", rows)
    result = CliRunner().invoke(main, ["elo", str(path), "--anchor", "unguided", "--rounds", "50", "--json"])
    assert result.exit_code == 0, result.output
    ratings = {r["model"]: r for r in json.loads(result.stdout)["questions"][0]["ratings"]}
    assert abs(ratings["cfg:1.5"]["rating"]) < 1e-6 and ratings["unguided"]["rating"] == 0
    assert ratings["cfg:1.5"]["rank"] == ratings["unguided"]["rank"] == 2 and ratings["cfg:3.0"]["rank"] == 1
    text = CliRunner().invoke(main, ["elo", str(path), "--anchor", "unguided", "--rounds", "50"]).output
    assert "-0.0" not in text and " 0.0 " in text
    bad = _judgments_csv(tmp_path / "bad.csv", rows + [("cfg:1.5", "unguided", "maybe")])
    refused = CliRunner().invoke(main, ["elo", str(bad)])
    assert refused.exit_code == 1 and "--drop-invalid" in refused.output


def test_elo_plot_reads_the_sweeps_setting_names_and_lists_the_names_it_found(tmp_path):
    rows = [("unguided", "cfg-1.5", "b"), ("cfg-1.5", "unguided", "a"), ("unguided", "cfg-1.5", "a")]
    rows += [("cfg-3", "unguided", "a"), ("unguided", "cfg-3", "b"), ("cfg-3", "cfg-1.5", "tie")]
    path = _judgments_csv(tmp_path / "sweep_names.csv", rows)
    drawn = CliRunner().invoke(main, ["elo-plot", str(path), "--out", str(tmp_path / "f7.png"), "--rounds", "20"])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "f7.png").is_file() and "not guidance settings" not in drawn.output
    other = _judgments_csv(tmp_path / "other.csv", [("unguided", "big model", "a"), ("unguided", "cfg_3", "b")])
    refused = CliRunner().invoke(main, ["elo-plot", str(other), "--out", str(tmp_path / "g.png"), "--rounds", "0"])
    assert refused.exit_code == 1
    assert "the names found: big model, cfg_3, unguided" in refused.output and "joined by ':'" in refused.output


def _twelve_points():
    import pandas as pd

    rows = []
    for family, scales, method in (
        ("cfg", [1, 1.5, 2, 3, 4, 8], "ddim"),
        ("clip", [0, 1, 2, 4, 16], "ancestral"),
        ("none", [0], "ddim"),
    ):
        for s in scales:  # clustered points (toy-world-like values), where labels collide unless placed
            guided = family != "clip"
            rows.append(
                {
                    "setting": f"{family}-{s:g}",
                    "family": family,
                    "scale": float(s),
                    "method": method,
                    "fid": 1.7 - 0.1 * s + 0.05 * s * s if guided else 2.5 + 0.01 * s,
                    "is": 5 + 0.1 * s,
                    "precision": 0.7 + 0.02 * s if guided else 0.86 + 0.001 * s,
                    "recall": 0.95 - 0.01 * s if guided else 0.906 - 0.005 * s,
                    "clip_score": 89.5 + 0.5 * s if guided else 94.8 + 0.05 * s,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("columns", [None, ["precision", "recall"]])
def test_figure6_legend_and_labels_lie_inside_the_figure_without_overlap(columns):
    """Issue 31: 4 legend entries (two families named with their methods, unguided, Pareto-optimal)
    and 12 labelled points per panel: every legend entry, point label, axis label and title lies
    inside the figure, no two labels of a panel overlap, and the legend overlaps no panel. Checked on
    matplotlib's own text extents (renderer window extents), for three panels and for one (the
    narrow figure where a one-row legend was clipped)."""
    import matplotlib.pyplot as plt

    from reports.figure6 import figure6
    from reports.pareto import FIGURE6_PAIRS, available_pairs

    df = _twelve_points()
    if columns:
        df = df[["setting", "family", "scale", "method", *columns]]
    fig = figure6(df, available_pairs(df, FIGURE6_PAIRS))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    legend = fig.legends[0]
    assert len(legend.get_texts()) == 4

    def inside(box):
        return (
            box.x0 >= frame.x0 - 0.5
            and box.y0 >= frame.y0 - 0.5
            and box.x1 <= frame.x1 + 0.5
            and box.y1 <= frame.y1 + 0.5
        )

    assert inside(legend.get_window_extent(renderer))
    for text in legend.get_texts():
        assert inside(text.get_window_extent(renderer)), text.get_text()
    for ax in fig.axes:
        assert not ax.get_window_extent(renderer).overlaps(legend.get_window_extent(renderer))
        for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
            assert inside(text.get_window_extent(renderer)), text.get_text()
        labels = ax.texts
        assert len(labels) == 12
        boxes = [t.get_window_extent(renderer) for t in labels]
        for t, box in zip(labels, boxes):
            assert inside(box) and ax.get_window_extent(renderer).contains(box.x0, box.y0), t.get_text()
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    plt.close(fig)


def test_ctrl_c_says_the_finished_shards_are_kept(tmp_path, monkeypatch):
    import glide_eval.cli.sweep as sweep_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_cli, "run_sweep", interrupted)
    config = _glide_world(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["sweep", str(config), "--no-progress"])
    assert result.exit_code == 130 and "Aborted!" not in result.output
    assert f"the finished shards are kept in {tmp_path / 'out'}" in result.output
    assert "run the same command again to resume" in result.output


def test_a_caption_count_over_the_annotations_is_tagged_captions_n(tmp_path, monkeypatch):
    config = _glide_world(tmp_path, monkeypatch)
    config.write_text(config.read_text().replace("n = 4", "n = 11"))  # the folder holds 10 captions
    result = CliRunner().invoke(main, ["sweep", str(config), "--check"])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if "asked for 11 captions" in x)
    assert "[captions.n]" in line and "captions_val2014.json holds 10" in line


def _own_files_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("## Your own files")
    return text[start : text.index("\n## ", start + 1)]


def _options(command: str) -> dict[str, object]:
    """{--flag: its click option} of a glide-eval command, loaded the way `glide-eval --help` lists it."""
    import click

    cmd = main.get_command(click.Context(main), command)
    return {opt: p for p in cmd.params if isinstance(p, click.Option) for opt in p.opts}


def test_the_readme_own_files_section_matches_the_tool_flag_by_flag():
    """Issue 31: every flag the README's "Your own files" section names exists on the commands it
    names it for (checked against each command's own options, as --help lists them); each table
    row's environment variable is the one that flag (or, for `sweep`, the config key it overrides)
    reads; and no command has a row's flag without the row listing it."""
    from glide_eval.cli import COMMANDS
    from glide_eval.cli.sweep import PATH_FLAGS
    from glide_eval.sweep.config import ENV_VARS

    section = _own_files_section()
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`--" in line]
    assert len(rows) >= 4  # checkpoints, Inception, CLIP, MS-COCO, and the other extractors' weights
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        env = re.fullmatch(r"`(\w+)`", cells[1])[1]
        flag = re.match(r"`(--[a-z0-9-]+)", cells[2])[1]
        listed = [c for c in re.findall(r"`([a-z-]+)`", cells[2].split("(", 1)[1]) if c in COMMANDS]
        others = re.findall(r"`([a-z-]+) (--[a-z0-9-]+)", cells[2])  # e.g. `regress --candidate DIR`
        for command in listed:
            option = _options(command).get(flag)
            assert option is not None, f"{command} has no {flag}"
            if command == "sweep":
                assert ENV_VARS[PATH_FLAGS[option.name]] == env, (command, flag)
            else:
                assert option.envvar == env, (command, flag, option.envvar)
        for command, other in others:
            assert other in _options(command), f"{command} has no {other}"
        having = {c for c in COMMANDS if flag in _options(c)}
        assert having == set(listed), f"{flag}: README lists {sorted(listed)}, the tool has it on {sorted(having)}"
    # every other `command --flag` the section's text names exists on that command, a bare flag on one
    for span in re.findall(r"`([^`]+)`", section):
        words = span.split()
        if words and words[0] == "glide-eval":
            words = words[1:]
        if words and words[0] in COMMANDS:
            for flag in (w for w in words if w.startswith("--")):
                assert flag in _options(words[0]), f"README: `{span}`: {words[0]} has no {flag}"
        elif words and words[0].startswith("--"):  # a bare flag (its command named in the prose): one exists
            assert any(words[0] in _options(c) for c in COMMANDS), span
    # required options: none of the section's folder flags is required when its variable can give it
    for command in ("coco-reference", "coco-captions"):
        assert not _options(command)["--coco"].required


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_checkpoint_says_what_the_file_is_not_and_never_suggests_unsafe_loading(tmp_path, legacy):
    """torch's own message for a cut-short legacy (pickle) file advises reloading with
    weights_only=False ("can result in arbitrary code execution"); ours says what the file is not."""
    import io

    import torch

    from samplers.checkpoints import CheckpointReadError, load_state_dict_file

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buf, _use_new_zipfile_serialization=not legacy)
    path = tmp_path / "base.pt"
    for size in (300, len(buf.getvalue()) // 2):
        path.write_bytes(buf.getvalue()[:size])
        with pytest.raises(CheckpointReadError) as e:
            load_state_dict_file(path, mmap=True)
        message = str(e.value)
        assert message.startswith(f"{path}: not a readable PyTorch checkpoint: ")
        assert "cut short (a truncated download?)" in message
        assert "weights_only" not in message and "Weights only" not in message
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CheckpointReadError, match="neither a zip archive nor a pickle"):
        load_state_dict_file(path)
