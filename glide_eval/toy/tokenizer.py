"""Word-level tokenizer for the toy world's captions (offline, no BPE files).

GLIDE-style: `glide_tokenize(captions, text_ctx)` -> (tokens [N, text_ctx] padded with the
end token `END = N_VOCAB - 1`, mask [N, text_ctx] False on padding); the empty caption is
the unconditional input. CLIP-style: `clip_tokenize(captions)` -> ([START] + words + [END]
zero-padded to CLIP_CONTEXT, lens). Unknown words map to UNK.
"""

from __future__ import annotations

import torch

from glide_eval.toy.world import ATTRIBUTES, TEMPLATES

TEXT_CTX = 16  # GLIDE text context of the toy models
CLIP_CONTEXT = 16  # the toy noised CLIP's max_text_len


def _words() -> list[str]:
    words = {w for t in TEMPLATES for w in t.split() if not w.startswith("{")}
    for values in ATTRIBUTES.values():
        words.update(values)
    words.update(s + "s" for s in ATTRIBUTES["shape"])
    words.add("a")
    return sorted(words)


VOCAB: tuple[str, ...] = ("<pad>", "<unk>", "<start>", *_words(), "<end>")
N_VOCAB = len(VOCAB)
PAD, UNK, START, END = 0, 1, 2, N_VOCAB - 1
_IDS = {w: i for i, w in enumerate(VOCAB)}


def split_words(caption: str) -> list[str]:
    """Lowercased words; punctuation ',' is its own word."""
    return caption.lower().replace(",", " , ").split()


def encode(caption: str) -> list[int]:
    """Unpadded token ids of a caption."""
    return [_IDS.get(w, UNK) for w in split_words(caption)]


def decode(ids) -> str:
    return " ".join(VOCAB[int(i)] for i in ids if int(i) not in (PAD, START, END))


def _check(captions) -> list[str]:
    if isinstance(captions, str):
        raise TypeError("the toy tokenizers take a list of captions, not a string")
    return list(captions)


def glide_tokenize(captions: list[str], text_ctx: int = TEXT_CTX) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, text_ctx] padded with END, mask BoolTensor [N, text_ctx])."""
    captions = _check(captions)
    tokens = torch.full((len(captions), text_ctx), END, dtype=torch.long)
    mask = torch.zeros((len(captions), text_ctx), dtype=torch.bool)
    for i, caption in enumerate(captions):
        ids = encode(caption)[:text_ctx]
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = True
    return tokens, mask


def clip_tokenize(captions: list[str], context: int = CLIP_CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, context] zero-padded, lens LongTensor [N]) with START/END markers."""
    captions = _check(captions)
    tokens = torch.zeros((len(captions), context), dtype=torch.long)
    lens = torch.zeros(len(captions), dtype=torch.long)
    for i, caption in enumerate(captions):
        ids = [START, *encode(caption)[: context - 2], END]
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lens[i] = len(ids)
    return tokens, lens


def count_truncated(captions: list[str], context: int = CLIP_CONTEXT) -> int:
    """Captions whose words plus START/END exceed the CLIP context."""
    return sum(len(split_words(c)) + 2 > context for c in _check(captions))
