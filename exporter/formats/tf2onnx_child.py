"""tf2onnx's command line, with the garbage of its ONNX optimizer loop collected as it goes.

Run as ``python -m exporter.formats.tf2onnx_child <tf2onnx.convert arguments>`` by the ``onnx`` format.

Why: before each of its ~12 ONNX optimizers, on each pass, tf2onnx deep-copies the whole graph, weights
included, so that it can roll back an optimizer that fails. The old copies are reference cycles, which only
Python's cyclic collector frees, and it runs far less often than a big model makes them. For BiT-M R50x1 21k
each copy is about 0.8 GB, and about eight of them piled up before each collection. That was the 11.3 GB peak
(``benchmarks/records/tf2onnx-memory.md``). Collecting before each optimizer keeps one copy alive.

The hook is tf2onnx's private optimizer table (tf2onnx is pinned). If a later tf2onnx lacks it, the
conversion runs unchanged at the old peak.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any


def collect_between_optimizers() -> bool:
    """Makes each tf2onnx optimizer start with the previous one's garbage freed; False if the hook is gone."""
    from tf2onnx import optimizer

    table = getattr(optimizer, "_get_optimizers", None)
    if table is None:
        return False

    def collected(factory: Callable[[], Any]) -> Callable[[], Any]:
        def make() -> Any:
            gc.collect()
            return factory()

        return make

    optimizer._get_optimizers = lambda: {name: collected(factory) for name, factory in table().items()}
    return True


def main(argv: list[str]) -> None:
    collect_between_optimizers()
    from tf2onnx import convert

    sys.argv = ["tf2onnx.convert", *argv]
    convert.main()


if __name__ == "__main__":
    main(sys.argv[1:])
