"""The toy world: determinism, captions vs labels vs pixels, tokenizer."""

import numpy as np
import pytest
import torch

from glide_eval.toy import tokenizer as tok
from glide_eval.toy.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    caption_for,
    dataset,
    parse_caption,
    render,
    sample_captions,
    scene,
)


def test_scenes_are_deterministic_and_distinct():
    a, b = scene(7, "train", seed=3), scene(7, "train", seed=3)
    assert a == b
    assert np.array_equal(render(a, 32), render(b, 32))
    images, captions, _ = dataset(20, "train")
    assert len({im.tobytes() for im in images}) == 20
    val = dataset(20, "validation")[0]
    assert not any(np.array_equal(x, y) for x, y in zip(images, val))
    assert sample_captions(5, seed=1) == [scene(i, "validation", 1).caption for i in range(5)]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        scene(0, "test")
    with pytest.raises(ValueError, match="index"):
        scene(-1)


def test_captions_name_exactly_the_labels():
    for i in range(300):
        s = scene(i)
        assert parse_caption(s.caption) == s.labels, s.caption
        for name, values in ATTRIBUTES.items():
            if name != "count" or s.labels["count"] > 0:
                assert (
                    values[s.labels[name]] in s.caption.replace(",", " ").split()
                    or values[s.labels[name]] + "s" in s.caption.split()
                )
    assert (
        caption_for({"shape": 0, "colour": 0, "count": 1, "size": 0, "background": 3})
        == "two small red circles on a blue background"
    )


def _colour_fraction(img: np.ndarray, rgb, tol=30) -> float:
    return float((np.abs(img.astype(int) - np.array(rgb)[:, None, None]).max(0) <= tol).mean())


def test_pixels_match_labels():
    for i in range(60):
        s = scene(i)
        img = render(s, 64)
        colour = ATTRIBUTES["colour"][s.labels["colour"]]
        background = ATTRIBUTES["background"][s.labels["background"]]
        assert colour != background
        assert _colour_fraction(img, BACKGROUNDS[background]) > 0.4  # the background dominates
        area = _colour_fraction(img, COLOURS[colour])
        assert 0.005 < area < 0.6
        assert len(s.objects) == s.labels["count"] + 1
    # large objects cover more pixels than small ones, on average
    areas = {0: [], 1: []}
    for i in range(200):
        s = scene(i)
        colour = COLOURS[ATTRIBUTES["colour"][s.labels["colour"]]]
        areas[s.labels["size"]].append(_colour_fraction(render(s, 32), colour) / (s.labels["count"] + 1))
    assert np.mean(areas[1]) > 2 * np.mean(areas[0])


def test_32_and_64_show_the_same_scene():
    for i in range(10):
        s = scene(i, "validation")
        big = render(s, 64).astype(np.float64)
        small = render(s, 32).astype(np.float64)
        pooled = big.reshape(3, 32, 2, 32, 2).mean(axis=(2, 4))
        assert np.abs(pooled - small).mean() < 2.0


def test_glide_tokenizer_pads_with_end_token():
    tokens, mask = tok.glide_tokenize(["two small red circles on a blue background", ""], text_ctx=12)
    assert tokens.shape == mask.shape == (2, 12) and mask.dtype == torch.bool
    words = "two small red circles on a blue background".split()
    assert [tok.VOCAB[i] for i in tokens[0, :8]] == words
    assert mask[0].sum() == 8 and (tokens[0, 8:] == tok.END).all()
    assert tok.END == tok.N_VOCAB - 1
    assert not mask[1].any() and (tokens[1] == tok.END).all()  # empty caption = unconditional
    assert tok.encode("two zebras")[1] == tok.UNK
    assert tok.decode(tokens[0]) == " ".join(words)
    with pytest.raises(TypeError):
        tok.glide_tokenize("a red circle")


def test_every_caption_is_in_vocabulary_and_fits():
    for i in range(500):
        ids = tok.encode(scene(i).caption)
        assert tok.UNK not in ids and len(ids) + 2 <= tok.CLIP_CONTEXT


def test_clip_tokenizer_markers_and_lengths():
    tokens, lens = tok.clip_tokenize(["a red circle , small , on a gray background", "x " * 30])
    assert tokens.shape == (2, tok.CLIP_CONTEXT)
    assert lens.tolist() == [12, tok.CLIP_CONTEXT]
    assert tokens[0, 0] == tok.START and tokens[0, 11] == tok.END and (tokens[0, 12:] == tok.PAD).all()
    assert tokens[1, -1] == tok.END
    assert tok.count_truncated(["a red circle", "x " * 30]) == 1
