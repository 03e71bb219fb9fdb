"""Word-level tokenizer for the toy world's captions (offline, no BPE files).

GLIDE-style: `glide_tokenize(captions, text_ctx)` -> (tokens [N, text_ctx] padded with the
end token `END = N_VOCAB - 1`, mask [N, text_ctx] False on padding); the empty caption is
the unconditional input. CLIP-style: `clip_tokenize(captions)` -> ([START] + words + [END]
zero-padded to CLIP_CONTEXT, lens). Unknown words map to UNK. Truncation and
padding are `samplers.tokenizers`' (`pad_glide_tokens`, `pad_clip_tokens`), as for the BPE ones.
"""

from __future__ import annotations

import torch

from glide_eval.toy.world import ATTRIBUTES, TEMPLATES
from samplers.tokenizers import caption_list, pad_clip_tokens, pad_glide_tokens

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


def glide_tokenize(captions: list[str], text_ctx: int = TEXT_CTX) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, text_ctx] padded with END, mask BoolTensor [N, text_ctx])."""
    return pad_glide_tokens([encode(c) for c in caption_list(captions, "glide_tokenize")], text_ctx, END)


def clip_tokenize(captions: list[str], context: int = CLIP_CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor [N, context] zero-padded, lens LongTensor [N]) with START/END markers."""
    return pad_clip_tokens([encode(c) for c in caption_list(captions, "clip_tokenize")], context, START, END)


def count_truncated(captions: list[str], context: int = CLIP_CONTEXT) -> int:
    """Captions whose words plus START/END exceed the CLIP context."""
    return sum(len(split_words(c)) + 2 > context for c in caption_list(captions, "count_truncated"))
