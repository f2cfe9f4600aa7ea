"""User-facing errors.

A ``UserError`` is something the user can fix (missing file, malformed line, unknown name, bad option).
The CLI prints its message as one line and exits non-zero, with no traceback. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or options; its message says what is wrong and what to do."""

