"""Catalog runs (exporter.zoo): job keys, resuming, failures, admission by memory, and a killed worker, on a real
local Ray instance shared by the module and tiny twins (the cluster test is in test_zoo_cluster.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubedge.exporter.formats import FORMATS
from hubedge.exporter.options import ExportOptions
from hubedge.exporter.zoo import Job, JobKey, expand_models, plan_jobs
from hubedge.exporter.zoo.ledger import LEDGER
from hubedge.runtimes.errors import HubedgeError, ModelNotFoundError
from tests.test_cli import run

pytestmark = [pytest.mark.export, pytest.mark.ray]

GiB = 2**30
BUDGET = 6 * GiB  # each export asks for 3.5 GiB or more (exporter.memory_budget.BASE): two never fit together
VERSIONS = {"hubedge": "1", "tensorflow": "2"}


def test_globs_expand_over_the_catalog_and_a_glob_that_matches_nothing_is_refused():
    experts = expand_models(["expert-*"])
    assert len(experts) == 48 and "expert-conveyance" in experts
    assert expand_models(["bit-m-r50x1*", "bit-m-r50x1-in21k,expert-bird"])[-1] == "expert-bird"
    assert len(set(expand_models(["bit-m-r50x1*", "bit-m-r50x1-in21k"]))) == len(expand_models(["bit-m-r50x1*"]))
    with pytest.raises(ModelNotFoundError, match="matches no catalog name"):
        expand_models(["nothing-*"])


def test_job_keys_are_deterministic_and_change_with_any_option_weights_or_tool_version(tiny_classifier):
    job = Job("bit-m-r50x1-in21k", "seeded", "edge", "tflite", "int8")
    key = JobKey.of(job, VERSIONS)
    assert JobKey.of(job, dict(VERSIONS)).digest == key.digest and len(key.digest) == 64
    assert key.record["calibration"] and key.record["weights"].startswith("twin:")
    others = [dataclasses.replace(job, options=ExportOptions(calibration_size=80)),
              dataclasses.replace(job, options=ExportOptions(int8_fallback="none")),
              dataclasses.replace(job, options=ExportOptions(graph_writer="converter")),
              dataclasses.replace(job, twin_form="published"), dataclasses.replace(job, model="bit-m-r50x3-in21k"),
              dataclasses.replace(job, precision="fp16"), dataclasses.replace(job, format="onnx")]
    digests = {JobKey.of(other, VERSIONS).digest for other in others} | {key.digest}
    assert len(digests) == len(others) + 1
    assert JobKey.of(job, {**VERSIONS, "tensorflow": "3"}).digest != key.digest
    local = Job(str(tiny_classifier.weights["savedmodel"]), "hub", "edge", "tflite", "fp32")
    assert JobKey.of(local, VERSIONS).record["weights"].startswith("local:")
    # the same model named by its handle is the same job
    handle = dataclasses.replace(job, model="google/bit/m-r50x1/imagenet21k_classification/1")
    assert JobKey.of(handle, VERSIONS).digest == key.digest


@pytest.fixture(scope="module")
def ray_instance():
    """One real local Ray instance for the module: 2 CPUs and a 6 GiB memory budget."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=256 * 2**20, _memory=BUDGET)
    yield ray
    ray.shutdown()


def _jobs(models, output_format="tflite", precision="fp32"):
    return plan_jobs([str(model) for model in models], "hub", "edge", [(FORMATS[output_format], precision)],
                     ExportOptions())


def _ledger(folder: Path) -> dict:
    return json.loads((folder / LEDGER).read_text())["jobs"]


# slow (1.5-2 minutes): four catalog runs on real Ray, four exports one after another (the admission control under
# test keeps them from overlapping), each in a Ray worker that imports TensorFlow afresh
def test_a_run_skips_what_is_up_to_date_redoes_a_tampered_artifact_and_never_overlaps_jobs_that_do_not_fit(
        ray_instance, tmp_path, tiny_classifier, tiny_features):
    from hubedge.exporter.zoo.fanout import memory_request, run_jobs

    jobs = _jobs([tiny_classifier.weights["savedmodel"], tiny_features.weights["savedmodel"]])
    assert all(memory_request(job) > BUDGET / 2 for job in jobs)
    first = run_jobs(jobs, tmp_path)
    assert len(first.done) == 2 and not first.failed and not first.skipped
    entries = _ledger(tmp_path)
    spans = sorted((entry["started"], entry["ended"]) for entry in entries.values())
    assert spans[0][1] <= spans[1][0], spans  # admission control: the second began after the first ended
    for digest, entry in entries.items():
        manifest = json.loads((tmp_path / entry["artifact"]).with_suffix(".json").read_text())
        assert manifest["job"]["key"] == digest and manifest["verification"]["passed"]
        assert entry["memory_request_mb"] >= 3.5 * 1024 and entry["node"] and entry["attempts"] == 1
    again = run_jobs(jobs, tmp_path)
    assert len(again.skipped) == 2 and not again.done
    artifact = tmp_path / "tiny-bit-ilsvrc.tflite.fp32.tflite"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    redone = run_jobs(jobs, tmp_path)
    assert len(redone.done) == 1 and len(redone.skipped) == 1
    # the redone job took the FP32 reference its model's earlier manifest recorded, instead of computing it again
    manifest = json.loads(artifact.with_suffix(".json").read_text())
    assert manifest["reference"]["reused_from"] == artifact.with_suffix(".json").name
    # a job whose recorded reference was replaced is redone, and computes its own
    features = json.loads((tmp_path / "tiny-bit-features.tflite.fp32.json").read_text())
    recorded = tmp_path / features["reference"]["file"]
    content = recorded.read_bytes()
    recorded.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))
    redone = run_jobs(jobs, tmp_path)
    assert len(redone.done) == 1 and len(redone.skipped) == 1
    features = json.loads((tmp_path / "tiny-bit-features.tflite.fp32.json").read_text())
    assert "reused_from" not in features["reference"]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".hubedge-")]


# slow (about a minute): two catalog runs on real Ray, each worker process importing TensorFlow afresh
def test_a_failed_job_is_recorded_with_its_reason_the_others_go_on_and_retry_failed_runs_only_it(
        ray_instance, capsys, tmp_path, tiny_classifier):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    out = tmp_path / "out"
    argv = ["export", "--model", str(tiny_classifier.weights["savedmodel"]), "--model", str(broken), "--format",
            "tflite", "--output", str(out)]
    code, stdout, err = run(capsys, *argv)
    assert code == 1 and "1 done, 0 skipped (up to date), 1 failed" in stdout, (stdout, err)
    failed = [entry for entry in _ledger(out).values() if entry["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["model"] == str(broken) and "\n" not in failed[0]["reason"]
    assert "--retry-failed runs only those" in err and "to run" in err
    _check_catalog_report(out, str(broken), capsys)
    code, stdout, err = run(capsys, *argv, "--retry-failed")
    assert code == 1 and "0 done, 1 skipped" in stdout and "1 failed" in stdout
    assert "1 skipped (up to date or not failed last time), 1 to run" in err


def _check_catalog_report(out: Path, broken: str, capsys) -> None:
    """The report the run wrote at its end: one row per job, the failure with its reason, the export's figures."""
    import yaml

    report = json.loads((out / "hubedge-report.json").read_text())
    assert report["counts"] == {"failed": 1, "ok": 1}
    failed = next(row for row in report["rows"] if row["status"] == "failed")
    assert failed["model"] == broken and failed["reason"] and failed["job"]["attempts"] == 1
    done = next(row for row in report["rows"] if row["status"] == "ok")
    assert done["agreement"]["cosine_min"] > 0.999 and done["verified"] and done["size_mb"] > 0
    assert done["export_seconds"] > 0 and done["peak_memory_mb"] > 0 and done["job"]["host"] and done["job"]["node"]
    record = yaml.safe_load((out / "perf" / f"{done['model']}.yaml").read_text())
    assert record["artifacts"]["tflite-fp32"]["numerics"]["cosine_min"] == done["agreement"]["cosine_min"]
    assert f"| {done['model']} | tflite | fp32 | ok |" in (out / "hubedge-report.md").read_text()
    assert (out / "hubedge-report.png").stat().st_size > 0
    code, stdout, _ = run(capsys, "report", str(out))  # the same report on demand; a failed row exits 1
    assert code == 1 and "2 (model, format, precision) rows: 1 failed, 1 ok" in stdout


def test_a_request_no_node_can_meet_is_refused_in_one_line_before_anything_runs(ray_instance, tmp_path):
    from hubedge.exporter.zoo.fanout import memory_request, run_jobs

    jobs = plan_jobs(["bit-m-r152x4-in21k", "expert-bird"], "seeded", "edge", [(FORMATS["onnx"], "fp32")],
                     ExportOptions())
    needed = memory_request(jobs[0]) / GiB  # the estimate of exporter.memory_budget, far past the 6 GiB node
    assert needed > 2 * BUDGET / GiB
    with pytest.raises(HubedgeError, match=rf"bit-m-r152x4-in21k onnx fp32 needs {needed:.1f} GiB .* no node") as error:
        run_jobs(jobs, tmp_path)
    assert "\n" not in str(error.value) and not (tmp_path / LEDGER).exists()


def test_a_killed_worker_leaves_nothing_half_written_and_the_next_run_finishes_the_rest(
        ray_instance, tmp_path, tiny_classifier, tiny_features):
    """The CLI in a process of its own, with its own local Ray; the export worker of the first job is killed with
    SIGKILL once it has begun writing its artifact (its temporary folder names its process)."""
    from hubedge.exporter.zoo.fanout import run_jobs

    models = [tiny_classifier.weights["savedmodel"], tiny_features.weights["savedmodel"]]
    command = [sys.executable, "-m", "hubedge", "export", *[arg for model in models for arg in ("--model", str(model))],
               "--format", "tflite", "--output", str(tmp_path)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and child.poll() is None and time.monotonic() < deadline:
        for path in tmp_path.glob(".hubedge-tmp-*"):
            match = re.match(r"\.hubedge-tmp-.+-(\d+)-", path.name)
            if match:
                killed = int(match.group(1))
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    stdout, stderr = child.communicate(timeout=600)
    assert killed is not None, stderr
    assert child.returncode == 1 and "the worker died" in stdout + stderr, (stdout, stderr)
    written = {path.name for path in tmp_path.iterdir() if not path.name.startswith(".")}
    artifacts = {name for name in written if name.endswith(".tflite")}
    assert all(name[: -len(".tflite")] + ".json" in written for name in artifacts)  # no artifact without its manifest
    assert len(artifacts) <= 1
    rest = run_jobs(_jobs(models), tmp_path)
    assert len(rest.done) == 2 - len(artifacts) and len(rest.skipped) == len(artifacts) and not rest.failed
    assert not list(tmp_path.glob(".hubedge-*"))  # the killed worker's folder went with the next run


def test_a_job_killed_for_memory_is_retried_once_with_a_larger_request_then_recorded(tmp_path, tiny_classifier,
                                                                                   tiny_features):
    """Ray's own memory monitor, its threshold set to 1 % of the machine so that it sees every running task as too
    much, kills each export: the run retries each once with 1.5× the memory request, then records it as failed."""
    from hubedge.exporter.zoo.fanout import OOM_GROWTH

    env = {**os.environ, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}
    models = [tiny_classifier.weights["savedmodel"], tiny_features.weights["savedmodel"]]
    command = [sys.executable, "-m", "hubedge", "export", *[arg for model in models for arg in ("--model", str(model))],
               "--format", "tflite", "--output", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("killed for memory; retrying once with 1.5× the request") == 2, done.stderr[-3000:]
    entries = list(_ledger(tmp_path).values())
    assert [entry["status"] for entry in entries] == ["failed", "failed"]
    assert all(entry["reason"] == "killed for memory twice (Ray's memory monitor)" and entry["attempts"] == 2
               for entry in entries)
    first_request = 3.5 * 1024  # MiB: the smallest any job asks (exporter.memory_budget.BASE)
    assert all(entry["memory_request_mb"] >= first_request * OOM_GROWTH for entry in entries)
    assert not [path for path in tmp_path.iterdir() if path.suffix == ".tflite"]
