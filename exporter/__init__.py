"""hubedge exporter: turns TF Hub image models (BiT first) into verified edge artifacts.

From Python: ``hubedge.exporter.export(model, formats=..., precisions=..., options=ExportOptions(...))``
(``hubedge.exporter.api``). The command line is ``hubedge`` (the ``hubedge.cli`` package), a thin layer over the same
calls. Importing this package never imports TensorFlow; exporting does.
"""

import os
import sys

from hubedge import __version__

# OpenVINO's converter and NNCF send usage telemetry from a thread pool, each event through a forked process,
# unless the user opted out. Exports are offline work, and a fork from a thread can deadlock in OpenBLAS's fork
# handler while numpy computes in the main thread (seen: a make check hung for 20 minutes in agreement metrics).
# Both libraries send nothing when the openvino_telemetry package cannot be imported, so in a process that imports
# the exporter before OpenVINO, it cannot be. HUBEDGE_OPENVINO_TELEMETRY=1 leaves it as OpenVINO ships it.
if os.environ.get("HUBEDGE_OPENVINO_TELEMETRY") != "1":
    sys.modules.setdefault("openvino_telemetry", None)

from hubedge.exporter.api import ExportsFailed, export  # noqa: E402
from hubedge.exporter.formats import Shortfall  # noqa: E402
from hubedge.exporter.options import ExportOptions  # noqa: E402
from hubedge.exporter.pipeline import ExportResult, VerificationFailed  # noqa: E402

__all__ = ["ExportOptions", "ExportResult", "ExportsFailed", "Shortfall", "VerificationFailed", "__version__",
           "export"]
