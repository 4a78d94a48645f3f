"""User-facing errors: one line that names the file and says how to fix it."""

from __future__ import annotations


class AutosamError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    The command line prints ``str(error)`` on one line and exits with status 2; no traceback.
    """


class CheckpointError(AutosamError):
    """A weights file is missing, corrupt, for another backbone or fails verification."""
