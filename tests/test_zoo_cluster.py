"""Cluster mode against a real two-node Ray cluster on this machine: ``ray start --head`` and a second node
with its own CPUs, both started and stopped by the test; the catalog run joins it as a user's would."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from hubedge.exporter.formats import FORMATS
from hubedge.exporter.options import ExportOptions
from hubedge.exporter.zoo import plan_jobs
from hubedge.exporter.zoo.ledger import LEDGER
from hubedge.runtimes.cpu import cpu_class
from tests.test_cli import run

pytestmark = [pytest.mark.export, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_node(*args: str) -> subprocess.Popen:
    """A node started with ``ray start --block``, once it is up. Its own process stops it (SIGTERM kills the node's
    processes), so the test never touches other Ray instances on the machine as ``ray stop`` would."""
    ray = Path(sys.executable).with_name("ray")
    node = subprocess.Popen([str(ray if ray.exists() else shutil.which("ray")), "start", *args, "--block",
                             "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said: list[str] = []
    deadline = time.monotonic() + 120
    for line in node.stdout:  # Ray says it blocks once the node is up; it exits at once when it fails to start
        said.append(line)
        if "block forever" in line or time.monotonic() > deadline:
            break
    if node.poll() is not None or not any("block forever" in line for line in said):
        _stop(node)
        pytest.fail(f"ray start {' '.join(args)} failed:\n{''.join(said)[-3000:]}")
    threading.Thread(target=node.stdout.read, daemon=True).start()  # keep its pipe drained
    return node


def _stop(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node, 1 CPU each, each with a custom resource that names it; only the head offers
    the CPU to benches (``device:cpu`` and its CPU class: ``hubedge devices --ray-resources``).

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
    nodes: list[subprocess.Popen] = []
    try:
        offered = {"hubedge-test-head": 1, "device:cpu": 1, f"device:cpu-{cpu_class()}": 1}
        nodes.append(_ray_node("--head", f"--port={port}", "--num-cpus=1", "--resources", json.dumps(offered),
                               "--include-dashboard=false", f"--temp-dir={temp}"))
        nodes.append(_ray_node(f"--address={address}", "--num-cpus=1", "--resources", '{"hubedge-test-worker": 1}'))
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


# slow (1-2 minutes, the cluster's start included): four exports on a real two-node Ray cluster, each in a worker
# that imports TensorFlow afresh
def test_a_catalog_run_spreads_its_jobs_over_a_real_two_node_cluster(cluster, tmp_path, tiny_classifier,
                                                                      tiny_features):
    import ray

    from hubedge.exporter.zoo.fanout import run_jobs

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


def _head_node(address: str) -> str:
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        return next(node["NodeID"] for node in ray.nodes() if "hubedge-test-head" in node["Resources"])
    finally:
        ray.shutdown()


# slow (about a minute): each bench task is a fresh Ray worker that imports TensorFlow for the reference
def test_a_bench_runs_only_on_the_node_that_offers_its_device_and_a_device_no_node_offers_is_reported(
        cluster, tmp_path, tiny_exports, capsys):
    artifacts = [str(tiny_exports[(fmt, "fp32")].artifact) for fmt in ("tflite", "onnx")]
    code, stdout, err = run(capsys, "bench", *artifacts, "--cluster", cluster, "--device", "all", "--runs", "3",
                            "--warmup", "1", "--json", str(tmp_path / "bench.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "bench.json").read_text())
    timed = [row for row in report["rows"] if row["status"] == "ok"]
    assert {row["node"] for row in timed} == {_head_node(cluster)}  # the worker node offers no device
    assert {row["resource"] for row in timed} == {f"device:cpu-{cpu_class()}"} and len(timed) == 3  # TF ref + 2
    assert all(row["cpu_class"] == cpu_class() and row["host"] for row in timed)
    assert report["machines"][0]["node"] == timed[0]["node"] and report["machines"][0]["threads"] == 1
    absent = [row for row in report["rows"] if row["status"] != "ok"]
    assert {(row["device"], row["reason"]) for row in absent} == {
        ("gpu", "no node of the Ray cluster offers device:gpu"), ("npu", "no node of the Ray cluster offers device:npu")}
    assert len(absent) == 4 and "no node of the Ray cluster offers device:gpu" in err
    assert f"cpu @ {timed[0]['host']} ({cpu_class()})" in stdout


def _raylet_of(resource: str) -> int:
    """The process id of the raylet of the node that offers ``resource`` (its command line lists its resources)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet " in command and resource in command:
            return int(entry.name)
    pytest.fail(f"no raylet offers {resource}")


def _parent_of(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


# slow (1-1.5 minutes): a third node joins, runs an export and is lost; its job runs again elsewhere
def test_a_job_whose_node_is_lost_runs_again_on_the_nodes_left(cluster, tmp_path, tiny_classifier, tiny_features):
    """The raylet of a node is killed with SIGKILL while that node's worker writes an artifact, as a machine that
    goes away would be: the run retries that job once on the other nodes and finishes every job."""
    import os
    import signal

    from hubedge.exporter.zoo.fanout import run_jobs

    doomed = _ray_node(f"--address={cluster}", "--num-cpus=1", "--resources", '{"hubedge-test-doomed": 1}')
    try:
        raylet = _raylet_of("hubedge-test-doomed")
        models = [str(tiny_classifier.weights["savedmodel"]), str(tiny_features.weights["savedmodel"])]
        jobs = plan_jobs(models, "hub", "edge", [(FORMATS["tflite"], "fp32"), (FORMATS["onnx"], "fp32")],
                         ExportOptions())[:3]  # three jobs on three nodes of one CPU each: one lands on the doomed
        said: list[str] = []
        finished: list = []
        runner = threading.Thread(target=lambda: finished.append(run_jobs(jobs, tmp_path, cluster=cluster,
                                                                          progress=said.append)))
        runner.start()
        deadline = time.monotonic() + 300
        while runner.is_alive() and time.monotonic() < deadline:
            writers = [int(match.group(1)) for path in tmp_path.glob(".hubedge-tmp-*")
                       if (match := re.match(r"\.hubedge-tmp-.+-(\d+)-", path.name))]
            if any(_parent_of(pid) == raylet for pid in writers):
                os.kill(raylet, signal.SIGKILL)
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the doomed node never ran an export: {said}")
        runner.join(timeout=600)
    finally:
        _stop(doomed)
    assert finished, f"the run did not finish: {said}"
    summary = finished[0]
    assert len(summary.done) == 3 and not summary.failed, (summary.failed, said)
    assert sum("its node was lost; retrying once on the nodes left" in line for line in said) == 1, said
    entries = json.loads((tmp_path / LEDGER).read_text())["jobs"].values()
    assert sorted(entry["attempts"] for entry in entries) == [1, 1, 2]
    written = {path.name for path in tmp_path.iterdir()}
    assert not [name for name in written if name.startswith(".hubedge-")]  # the retry on this host removed them
    assert all(name.rsplit(".", 1)[0] + ".json" in written for name in written if name.endswith((".tflite", ".onnx")))
