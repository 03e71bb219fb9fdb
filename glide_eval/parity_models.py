"""Fixture checks for the models, CLIP and tokenizers (see glide_eval.parity)."""
