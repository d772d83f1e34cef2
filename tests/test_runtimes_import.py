"""The edge side must not need TensorFlow: importing runtimes never imports it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_runtimes_does_not_import_tensorflow():
    code = ("import sys, hubedge.runtimes, hubedge.runtimes.base, hubedge.runtimes.preprocess, "
            "hubedge.runtimes.agreement, hubedge.runtimes.manifest, hubedge.runtimes.reference; "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_hub') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
