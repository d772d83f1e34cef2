"""Artifacts run in a child process (``runtimes.isolated``): a runtime that aborts fails an export cleanly, and a
runtime's own error comes back as the same error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import runtimes
from runtimes import isolated
from exporter.pipeline import export_one
from exporter.formats import FORMATS
from runtimes.errors import HubedgeError

ABORTING_RUNTIME = ("import os, sys; print('F0000 delegate.cc:1] Check failed: degenerate range', file=sys.stderr, "
                    "flush=True); os.abort()")


def test_a_runtime_that_aborts_fails_the_export_with_one_line_and_leaves_nothing(tiny_classifier, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr(isolated, "child_command", lambda *args: [sys.executable, "-c", ABORTING_RUNTIME])
    with pytest.raises(isolated.RuntimeCrashed) as caught:
        export_one(tiny_classifier, FORMATS["tflite"], "fp32", tmp_path)
    message = str(caught.value)
    assert "killed by SIGABRT" in message and "Check failed: degenerate range" in message
    assert "tiny-bit-ilsvrc.tflite.fp32.tflite" in message and "was not written" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor its temporary files


def test_a_runtime_error_in_the_child_comes_back_as_the_same_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(HubedgeError) as in_process:
        runtimes.load(broken, device="cpu", strict=True)
    with pytest.raises(HubedgeError) as in_child:
        isolated.predict_isolated(broken, "cpu", np.zeros((1, 8, 8, 3), np.float32))
    assert type(in_child.value) is type(in_process.value) and str(in_child.value) == str(in_process.value)
