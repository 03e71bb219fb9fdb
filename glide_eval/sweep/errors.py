"""The sweep's errors: both end a command with a message that says what to do."""

from __future__ import annotations


class SweepError(RuntimeError):
    """The sweep cannot go on; the message says why and what to do."""


class MissingComponentError(RuntimeError):
    """A model, weight file, data set or package the sweep needs is not there."""
