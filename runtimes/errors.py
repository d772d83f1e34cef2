"""The one family of errors that hubedge reports to users.

Every failure a user can cause or fix (a wrong handle, no network, a corrupt model, a bad image) is raised as
a :class:`HubedgeError` whose message is one line saying what is wrong and what to do. The CLI prints that
line and exits non-zero; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CannotCompileError", "CorruptModelError", "HubedgeError", "InvalidInputError", "ModelNotFoundError",
    "SourceUnavailableError", "UnsupportedError", "runtime_message"]

import re

# a runtime's own "where in its C++ this was raised" lines, which say nothing of the cause
SOURCE_LOCATION = re.compile(r"^(Exception from )?\S+\.(cpp|cc|h|hpp):\d+:?$")


class HubedgeError(Exception):
    """A user-facing error: ``str(error)`` is the whole message, one line."""

    exit_code: int = 2


class InvalidInputError(HubedgeError, ValueError):
    """Images of the wrong shape, dtype or range, or files that are not images."""


class ModelNotFoundError(HubedgeError, LookupError):
    """A model name, handle or path that names nothing hubedge can load."""


class SourceUnavailableError(HubedgeError):
    """A model that exists but cannot be fetched here (no network, unreachable hub)."""


class CorruptModelError(HubedgeError):
    """A SavedModel, checkpoint or artifact that exists but cannot be read."""


class UnsupportedError(HubedgeError):
    """A request that hubedge refuses before doing any work (an unsupported format/precision pair…)."""


class CannotCompileError(HubedgeError):
    """An artifact whose bytes are sound but that its runtime cannot compile for this CPU or device (a kernel it
    lacks here): not a corrupt file, and it may run on another CPU class."""


def runtime_message(error: BaseException, limit: int = 600) -> str:
    """A runtime's whole message on one line: every line that says something, its source-location lines left out,
    so that the line naming the cause is kept and not only the first."""
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not SOURCE_LOCATION.match(line)]
    text = " ".join(kept) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
