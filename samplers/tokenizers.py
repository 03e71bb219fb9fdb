"""Caption tokenizers for GLIDE (GPT-2 BPE) and its noised CLIP (CLIP BPE). Nothing is downloaded.

GLIDE: lowercased text, GPT-2 BPE (tiktoken "gpt2", read from $TIKTOKEN_CACHE_DIR), truncated
to `text_ctx` and padded with the end token 50256; the mask is False on padding. The empty
caption is the unconditional input (all padding).

Noised CLIP: open_clip's CLIP BPE (ftfy/html clean, whitespace collapse, lowercase), then
[start 49406] + up to 75 tokens + [end 49407], zero-padded to 77, with the length.

Truncation and padding from token ids are `pad_glide_tokens` / `pad_clip_tokens`, shared with
other vocabularies (the toy world's word tokenizer).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from torchvision_compat import ensure_torchvision

GLIDE_END_TOKEN = 50256
CLIP_CONTEXT = 77


@lru_cache(maxsize=1)
def _gpt2():
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # offline without the cached BPE files
        raise RuntimeError(
            "cannot load the GPT-2 BPE through tiktoken; offline, set TIKTOKEN_CACHE_DIR "
            f"to a folder holding tiktoken's cached gpt2 files ({type(error).__name__}: {error})"
        ) from error


@lru_cache(maxsize=1)
def _clip_bpe():
    ensure_torchvision()  # before open_clip
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def glide_tokens(caption: str) -> list[int]:
    """Unpadded GPT-2 BPE ids of the lowercased caption (special-token text is plain text)."""
    return _gpt2().encode_ordinary(caption.lower())


def caption_list(captions, function: str) -> list[str]:
    """`captions` as a list; a lone string (which would be tokenized letter by letter) is refused."""
    if isinstance(captions, str):
        raise TypeError(f"{function} takes a list of captions, not a string")
    return list(captions)


def pad_glide_tokens(id_lists: list[list[int]], text_ctx: int, end_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GLIDE's text input from unpadded ids: (tokens [N, text_ctx], each list truncated to `text_ctx`
    and padded with `end_token`; mask [N, text_ctx], False on padding)."""
    tokens = torch.full((len(id_lists), text_ctx), end_token, dtype=torch.long)
    mask = torch.zeros((len(id_lists), text_ctx), dtype=torch.bool)
    for i, ids in enumerate(id_lists):
        ids = ids[:text_ctx]
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = True
    return tokens, mask


def pad_clip_tokens(id_lists: list[list[int]], context: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A noised CLIP's text input from unpadded ids: (tokens [N, context], [start] + ids[: context - 2]
    + [end] zero-padded; lens [N], the length of each with its markers)."""
    tokens = torch.zeros((len(id_lists), context), dtype=torch.long)
    lens = torch.zeros(len(id_lists), dtype=torch.long)
    for i, ids in enumerate(id_lists):
        ids = [start, *ids[: context - 2], end]
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lens[i] = len(ids)
    return tokens, lens


def glide_tokenize(captions: list[str], text_ctx: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, text_ctx], mask BoolTensor [N, text_ctx]) for GLIDE's text encoder."""
    captions = caption_list(captions, "glide_tokenize")
    return pad_glide_tokens([glide_tokens(c) for c in captions], text_ctx, GLIDE_END_TOKEN)


def clip_tokenize(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, 77] zero-padded, lens LongTensor [N]) for the noised CLIP."""
    captions = caption_list(captions, "clip_tokenize")
    bpe = _clip_bpe()
    return pad_clip_tokens([bpe.encode(c) for c in captions], CLIP_CONTEXT, bpe.sot_token_id, bpe.eot_token_id)
