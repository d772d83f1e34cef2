"""hubedge benchmarks: latency and agreement with the FP32 reference, per artifact, precision and device.

From Python::

    from hubedge import benchmarks
    report = benchmarks.bench(["artifacts/"], benchmarks.BenchOptions(runs=20))
    print(benchmarks.report.markdown(report))
    verdict = benchmarks.judge(report, baseline, benchmarks.GateOptions(max_slowdown=0.10))

``hubedge bench`` is a thin layer over these calls. Every artifact runs through the same
``hubedge.runtimes.load(...).predict()`` users call, beside its reference measured in the same run, so every figure can
be read as a ratio to that reference. Importing this package never imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hubedge.benchmarks import report
from hubedge.benchmarks.gate import GateOptions, compare, judge
from hubedge.benchmarks.runner import REFERENCE_MODES, BenchOptions, reference_mode, run

__all__ = ["REFERENCE_MODES", "BenchOptions", "GateOptions", "bench", "compare", "judge", "reference_mode", "report"]


def bench(artifacts: str | Path | Sequence[str | Path], options: BenchOptions | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmarks the artifacts (files, or folders of them) and returns the report ``hubedge bench`` prints:
    ``{"machine", "reference_mode", "rows": [...]}``, each row with its ratios to its reference
    (``report.markdown(result)`` is the table, ``report.write`` saves JSON, Markdown or CSV)."""
    paths = [str(artifacts)] if isinstance(artifacts, (str, Path)) else [str(path) for path in artifacts]
    options = options if options is not None else BenchOptions()
    if not isinstance(options, BenchOptions):
        raise TypeError(f"options must be a BenchOptions, not {type(options).__name__}")
    return report.with_ratios(run(paths, options, progress=progress or (lambda _: None)))
