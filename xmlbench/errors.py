"""User-facing errors.

A ``UserError`` is something the user can fix (missing file, malformed line, unknown name, bad option).
The CLI prints its message as one line and exits non-zero, with no traceback. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or options; its message says what is wrong and what to do."""


def where(path: object, line: int | None = None) -> str:
    """Format a file (and optional 1-based line) for error messages: ``path:line``."""
    return f"{path}:{line}" if line is not None else f"{path}"
