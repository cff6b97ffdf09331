"""User-facing errors: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import os


class EchoError(Exception):
    """A problem with the user's input (a file, a manifest, an option), not a bug.

    The message names the offending file when there is one:
    ``echoasr: error: <file>: <what is wrong>``.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
