"""hubedge exporter: turns TF Hub image models (BiT first) into verified edge artifacts.

From Python: ``exporter.export(model, formats=..., precisions=..., options=ExportOptions(...))``
(``exporter.api``). The command line is ``hubedge`` (the ``hubedge.cli`` package), a thin layer over the same
calls. Importing this package never imports TensorFlow; exporting does.
"""

__version__ = "0.1.0"

from exporter.api import ExportsFailed, export  # noqa: E402
from exporter.formats import Shortfall  # noqa: E402
from exporter.options import ExportOptions  # noqa: E402
from exporter.pipeline import ExportResult, VerificationFailed  # noqa: E402

__all__ = ["ExportOptions", "ExportResult", "ExportsFailed", "Shortfall", "VerificationFailed", "__version__",
           "export"]
