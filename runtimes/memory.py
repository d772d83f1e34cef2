"""Peak memory of a piece of work, so every manifest can say what its export cost.

``ru_maxrss`` only ever grows over a process's life, so it cannot tell one export from the next; a sampling
thread reading the resident set size can. Converters run in child processes report their own peak
separately (see ``hubedge.exporter.formats.onnx``; benchmarks use it for peak RSS per row).
"""

from __future__ import annotations

import resource
import threading
from types import TracebackType

__all__ = ["PeakMemory", "SAMPLE_SECONDS", "current_rss_bytes"]

SAMPLE_SECONDS = 0.05


def current_rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; elsewhere the lifetime peak as an upper bound)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory() as peak: …`` then ``peak.bytes`` is the highest RSS seen during the block."""

    def __init__(self) -> None:
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, current_rss_bytes())
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> PeakMemory:
        self.bytes = current_rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, current_rss_bytes())
