"""User-facing errors: one line that names the file and says how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutosamError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    The command line prints ``str(error)`` on one line and exits with status 2; no traceback.
    """


class CheckpointError(AutosamError):
    """A weights file is missing, corrupt, for another backbone or fails verification."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``'; did you mean X?'`` for the closest of ``choices`` to a mistyped ``value``, else ``''``."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""
