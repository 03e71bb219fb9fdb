"""`glide-eval judge`'s application side: the images sweeps saved, as a judging `Catalog`
(`human_eval.judge` serves the page and writes the judgments)."""
