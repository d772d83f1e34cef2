"""The one family of errors that hubedge reports to users.

Every failure a user can cause or fix (a wrong handle, no network, a corrupt model, a bad image) is raised as
a :class:`HubedgeError` whose message is one line saying what is wrong and what to do. The CLI prints that
line and exits non-zero; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CorruptModelError", "HubedgeError", "InvalidInputError", "ModelNotFoundError", "SourceUnavailableError",
    "UnsupportedError"]


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
