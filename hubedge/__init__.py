"""hubedge: the command line over the libraries (``exporter``, ``runtimes``, ``benchmarks``).

``hubedge …`` and ``python -m hubedge …`` run :func:`hubedge.cli.main`. The libraries never import this package:
arrows point from the command line to them, never back.
"""

from exporter import __version__

__all__ = ["__version__"]
