"""GLIDE and noised-CLIP tokenizers against the reference's golden tokenizations (offline)."""

import json
from pathlib import Path

import pytest

from glide_eval.parity.models import check_tokenizers
from samplers.tokenizers import GLIDE_END_TOKEN, clip_tokenize, glide_tokenize, glide_tokens

FIXTURE = Path(__file__).parent / "fixtures" / "golden" / "tokenizers.json"
DATA = json.loads(FIXTURE.read_text())
ROWS = DATA["rows"]


def test_fixture_constants():
    assert GLIDE_END_TOKEN == DATA["glide_end_token"] == DATA["glide_n_vocab"] - 1
    tokens, lens = clip_tokenize(["x"])
    assert tokens[0, 0] == DATA["clip_start_token"] and tokens[0, lens[0] - 1] == DATA["clip_end_token"]


@pytest.mark.parametrize("row", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_glide_tokens_match_reference(row):
    assert glide_tokens(row["caption"]) == row["glide_tokens"]
    tokens, mask = glide_tokenize([row["caption"]])
    assert tokens.shape == mask.shape == (1, 128)
    assert tokens[0].tolist() == row["glide_padded_128"]
    assert mask[0].tolist() == row["glide_mask_128"]


@pytest.mark.parametrize("row", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_clip_tokens_match_reference(row):
    tokens, lens = clip_tokenize([row["caption"]])
    assert tokens.shape == (1, 77)
    assert tokens[0].tolist() == row["clip_padded_77"]
    assert lens.tolist() == [row["clip_len"]]


def test_batch_and_truncation():
    captions = [row["caption"] for row in ROWS]
    tokens, mask = glide_tokenize(captions, text_ctx=8)
    for i, row in enumerate(ROWS):
        n = min(8, len(row["glide_tokens"]))
        assert tokens[i, :n].tolist() == row["glide_tokens"][:n]
        assert (tokens[i, n:] == GLIDE_END_TOKEN).all()
        assert mask[i].sum() == n
    long = max(ROWS, key=lambda r: len(r["glide_tokens"]))
    assert len(long["glide_tokens"]) > 128
    ids, lens = clip_tokenize([long["caption"]])
    assert lens.item() == 77 and ids[0, -1] == DATA["clip_end_token"]


def test_empty_caption_is_unconditional():
    tokens, mask = glide_tokenize(["", "a"])
    assert (tokens[0] == GLIDE_END_TOKEN).all() and not mask[0].any()
    assert mask[1].sum() == 1


def test_rejects_a_bare_string():
    with pytest.raises(TypeError):
        glide_tokenize("a cat")
    with pytest.raises(TypeError):
        clip_tokenize("a cat")


def test_parity_check_passes():
    results = check_tokenizers(FIXTURE)
    assert len(results) == 4 and all(r.passed for r in results), results
