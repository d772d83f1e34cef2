"""hubedge exporter: turns TF Hub image models (BiT first) into verified edge artifacts.

The command line is ``hubedge`` (``exporter.cli``); ``python -m exporter`` does what ``hubedge export`` does.
"""

__version__ = "0.1.0"
