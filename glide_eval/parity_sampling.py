"""Fixture checks for schedules, respacing and sampling loops (see glide_eval.parity)."""
