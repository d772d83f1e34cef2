"""hubedge's cache folder, shared by the exporter (built twins) and the runtimes (optimized graphs)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$HUBEDGE_CACHE_DIR``, else ``~/.cache/hubedge``."""
    return Path(os.environ.get("HUBEDGE_CACHE_DIR") or Path.home() / ".cache" / "hubedge")
