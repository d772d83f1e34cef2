"""Keeps native libraries' log lines (TensorFlow, LiteRT, Dawn) off the user's terminal, and keeps them at hand.

These libraries write to file descriptor 2 from C++, past Python's ``sys.stderr`` and past their own log-level
variables. The lines are noise when things work and the only clue when they do not, so they are captured to
a temporary file instead of thrown away: a caller that fails can quote the last lines in its error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["CapturedLog", "captured_native_log"]


class CapturedLog:
    """What native code wrote to stderr inside :func:`captured_native_log` (filled in when the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 3, containing: tuple[str, ...] = ()) -> str:
        """The last ``lines`` lines, or the last ones that contain any of ``containing`` when given."""
        rows = [row.strip() for row in self.text.splitlines() if row.strip()]
        if containing:
            rows = [row for row in rows if any(word in row for word in containing)] or rows
        return " | ".join(rows[-lines:])


@contextlib.contextmanager
def captured_native_log() -> Iterator[CapturedLog]:
    """Points file descriptor 2 at a temporary file for the duration of the block."""
    log = CapturedLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.text = sink.read().decode("utf-8", "replace")
