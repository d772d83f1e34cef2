"""hubedge: verified edge exports of TF Hub image models, under one import name.

The libraries are ``hubedge.exporter`` (export and verify), ``hubedge.runtimes`` (load an artifact, ``predict()``;
no TensorFlow), ``hubedge.benchmarks`` (latency, agreement, the regression gate) and ``hubedge.calibration_data``
(the bundled photos). ``hubedge …`` and ``python -m hubedge …`` run :func:`hubedge.cli.main`; the libraries never
import the command line. Importing this package imports nothing else.

The repository keeps those libraries in top-level folders (``exporter/``, ``runtimes/``, ...); pyproject's
``package-dir`` installs them under ``hubedge``. An interpreter that imports this package straight from a checkout,
with no install (the emulated arm64 Python, ``PYTHONPATH=<checkout>``), finds them through the line below.
"""

from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "runtimes").is_dir() and (_CHECKOUT / "runtimes" / "__init__.py").is_file() \
        and (_CHECKOUT / "pyproject.toml").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 (a package's __path__)

__all__ = ["__version__"]
