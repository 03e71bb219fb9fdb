"""The errors of files that cannot be read; each names the file."""

from __future__ import annotations

import pickle
import zipfile
import zlib


class CorruptFileError(ValueError):
    """A statistics or feature file that cannot be read (truncated, damaged, not ours); names it.

    A cache raising it can be rebuilt; a file the user gave cannot, and is an error."""

    def __init__(self, path, what: str, cause: BaseException | str):
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"cannot read {what} {path}: {reason}")
        self.path = path


class DamagedFile(ValueError):
    """A run-directory file that fails its check (unreadable, or not the sha256 recorded); names it."""


# what np.load and reading the arrays of a damaged .npz raise: truncated or damaged zip (BadZipFile,
# "Bad CRC-32"), damaged deflate stream (zlib.error), short reads (EOFError, ValueError), a missing or
# mangled member (KeyError, pickle errors), metadata of the wrong shape (TypeError, AttributeError)
LOAD_ERRORS = (
    OSError,
    EOFError,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
    zlib.error,
    pickle.UnpicklingError,
)
