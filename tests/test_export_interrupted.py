"""An export that is killed or interrupted leaves nothing that looks finished."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubedge.exporter.fsutil import TEMP_PREFIX, sha256_of

HUBEDGE = str(Path(sys.executable).with_name("hubedge"))


def _start(model_dir: Path, output: Path) -> subprocess.Popen:
    # A program started in the background by a shell inherits SIGINT ignored; a user's terminal does not.
    return subprocess.Popen([HUBEDGE, "export", "--model", str(model_dir), "--format", "tflite",
                             "--quantize", "none,fp16,int8", "--output", str(output)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_temp(output: Path, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if output.is_dir() and any(p.name.startswith(TEMP_PREFIX) for p in output.iterdir()):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the export never started writing")


def _assert_only_complete_artifacts(output: Path) -> None:
    """Whatever is visible is a finished artifact whose manifest vouches for its exact bytes."""
    artifacts = [p for p in output.glob("*.tflite")]
    manifests = [p for p in output.glob("*.json")]
    assert len(artifacts) == len(manifests)
    for artifact in artifacts:
        manifest = json.loads(artifact.with_suffix(".json").read_text())
        assert manifest["artifact"]["sha256"] == sha256_of(artifact) and manifest["verification"]["passed"]


def test_a_killed_export_leaves_no_finished_looking_artifact(tiny_classifier, tmp_path):
    process = _start(tiny_classifier.savedmodel_dir, tmp_path)
    _wait_for_temp(tmp_path, process)
    process.kill()
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    _assert_only_complete_artifacts(tmp_path)
    assert len(list(tmp_path.glob("*.tflite"))) < 3
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".hubedge-")]  # what the killed run left

    from hubedge.exporter.api import ExportsFailed, export

    lines: list[str] = []
    with pytest.raises(ExportsFailed):  # a later run into the folder clears it, even one refused before any work
        export(tiny_classifier, formats="tflite", output=tmp_path, memory_budget=1, progress=lines.append)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hubedge-")]
    assert any("left by an earlier run on this host that was killed" in line for line in lines), lines


def test_ctrl_c_stops_cleanly_and_removes_temporary_files(tiny_classifier, tmp_path):
    process = _start(tiny_classifier.savedmodel_dir, tmp_path)
    _wait_for_temp(tmp_path, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    _assert_only_complete_artifacts(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hubedge-")]
