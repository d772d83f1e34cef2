"""Cluster mode against a real two-node Ray cluster on this machine: ``ray start --head`` and a second node
with its own CPUs, both started and stopped by the test; the catalog run joins it as a user's would."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from exporter.formats import FORMATS
from exporter.options import ExportOptions
from exporter.zoo import plan_jobs
from exporter.zoo.ledger import LEDGER

pytestmark = [pytest.mark.export, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    done = subprocess.run([str(ray if ray.exists() else shutil.which("ray")), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"ray {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node, 1 CPU each, each with a custom resource that names it.

    Token authentication is off for the nodes and this process alike: with ``RAY_AUTH_MODE`` unset, a head node
    turns it on when ``~/.ray/auth_token`` exists (a local ``ray.init()`` writes one, and sets the variable to
    ``token`` in its process), while a node joining later stays off and is refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        yield from _cluster()


def _cluster():
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths under its temp dir must stay within AF_UNIX's 107 bytes: pytest's folders (deeper still
    # under pytest-xdist) are too deep, so a short folder in the system's temp dir
    temp = tempfile.mkdtemp(prefix="hubedge-ray-")
    try:
        _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--resources", '{"hubedge-test-head": 1}',
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats")
        _ray("start", f"--address={address}", "--num-cpus=1", "--resources", '{"hubedge-test-worker": 1}',
             "--disable-usage-stats")
        yield address
    finally:
        _ray("stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)


def test_a_catalog_run_spreads_its_jobs_over_a_real_two_node_cluster(cluster, tmp_path, tiny_classifier,
                                                                      tiny_features):
    import ray

    from exporter.zoo.fanout import run_jobs

    assert not ray.is_initialized()
    models = [str(tiny_classifier.weights["savedmodel"]), str(tiny_features.weights["savedmodel"])]
    jobs = plan_jobs(models, "hub", "edge", [(FORMATS["tflite"], "fp32"), (FORMATS["onnx"], "fp32")],
                     ExportOptions())
    said: list[str] = []
    summary = run_jobs(jobs, tmp_path, cluster=cluster, progress=said.append)
    assert len(summary.done) == 4 and not summary.failed, (summary.failed, said)
    entries = json.loads((tmp_path / LEDGER).read_text())["jobs"].values()
    assert len({entry["node"] for entry in entries}) == 2  # both nodes ran exports
    assert not ray.is_initialized()  # the run left the cluster, which stays up for its owner
    again = run_jobs(jobs, tmp_path, cluster=cluster)
    assert len(again.skipped) == 4 and not again.done
