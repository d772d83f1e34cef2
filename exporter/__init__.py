"""hubedge exporter: turns TF Hub image models (BiT first) into verified edge artifacts.

From Python: ``exporter.export(model, formats=..., precisions=..., options=ExportOptions(...))``
(``exporter.api``). The command line is ``hubedge`` (``exporter.cli``), a thin layer over the same calls;
``python -m exporter`` does what ``hubedge export`` does.
"""

__version__ = "0.1.0"

from exporter.api import ExportOptions, ExportsFailed, export  # noqa: E402
from exporter.pipeline import ExportResult, VerificationFailed  # noqa: E402

__all__ = ["ExportOptions", "ExportResult", "ExportsFailed", "VerificationFailed", "__version__", "export"]
