"""Artifacts run in a child process (``hubedge.runtimes.isolated``): a runtime that aborts fails an export cleanly, and
a runtime's own error comes back as the same error."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hubedge import runtimes
from hubedge.runtimes import isolated
from hubedge.exporter.pipeline import export_one
from hubedge.exporter.formats import FORMATS
from hubedge.runtimes.errors import HubedgeError

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


def _cores() -> list[int]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:  # said, never passed: the sharded path needs two cores to run at all
        pytest.skip(f"this process may use {len(cores)} CPU core(s); one child per core needs 2 and Linux")
    return cores


def test_one_child_per_core_gives_the_outputs_of_one_child_in_the_images_order(tiny_exports):
    cores = _cores()
    artifact = tiny_exports[("onnx", "fp32")].artifact
    images = np.random.default_rng(0).random((21, 64, 64, 3), dtype=np.float32)
    counts: dict[str, list[int]] = {"whole": [], "sharded": []}
    whole, _, _ = isolated.predict_isolated(artifact, "cpu", images, on_done=counts["whole"].append)
    sharded, _, cpu = isolated.predict_isolated(artifact, "cpu", images, one_core_each=True,
                                                on_done=counts["sharded"].append)
    children = min(len(cores), isolated.MAX_SHARDS, len(images))
    assert cpu["one_child_per_core"] == [[core] for core in cores[:children]]  # each pinned, as it saw itself
    np.testing.assert_array_equal(sharded, whole)
    for count in counts.values():  # each child's own count of the images it ran, read back as it grows
        assert count and count[-1] == len(images) and count == sorted(set(count)), counts


def test_children_keep_within_the_cpus_a_scheduler_gave_this_process(tiny_exports, monkeypatch):
    """A catalog job on Ray declares one CPU: its verification is one child, not one per core."""
    _cores()
    artifact = tiny_exports[("onnx", "fp32")].artifact
    images = np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32)
    monkeypatch.setenv(isolated.CPU_BUDGET_ENV, "1")
    assert isolated.cpu_budget() == 1
    _, _, cpu = isolated.predict_isolated(artifact, "cpu", images, one_core_each=True)
    assert "one_child_per_core" not in cpu
    monkeypatch.setenv(isolated.CPU_BUDGET_ENV, "lots")
    assert isolated.cpu_budget() is None


def test_the_first_child_to_fail_fails_the_run_and_stops_the_others(monkeypatch):
    cores = _cores()
    last = cores[min(len(cores), isolated.MAX_SHARDS) - 1]
    sleeping = [sys.executable, "-c", "import time; time.sleep(600)"]
    started = []
    popen = isolated.subprocess.Popen
    def command(artifact, device, images, outputs, report, strict, threads, core, python):
        return [sys.executable, "-c", ABORTING_RUNTIME] if core == last else sleeping

    monkeypatch.setattr(isolated, "child_command", command)  # the last child aborts; the others would run 10 minutes
    monkeypatch.setattr(isolated.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    began = time.monotonic()
    with pytest.raises(isolated.RuntimeCrashed, match="killed by SIGABRT"):
        isolated.predict_isolated(Path("model.onnx"), "npu", np.zeros((8, 8, 8, 3), np.float32), one_core_each=True)
    assert time.monotonic() - began < 120  # not after the sleepers' 600 s
    assert len(started) >= 2 and started[-1].returncode == -signal.SIGABRT
    assert all(process.returncode == -signal.SIGKILL for process in started[:-1])
