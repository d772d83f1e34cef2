"""The catalog report (benchmarks.catalog_report, ``hubedge report``) from what a folder holds, with no export
extra: manifests, a job ledger and saved benches written here by hand, in the shapes the exporter writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hubedge.benchmarks import catalog_report
from hubedge.exporter.zoo.ledger import LEDGER, SCHEMA as LEDGER_SCHEMA
from hubedge.cli import main
from hubedge.runtimes.errors import InvalidInputError
from hubedge.runtimes.manifest import SCHEMA


def _artifact(folder: Path, name: str, fmt: str, precision: str, cosine: float, key: str) -> None:
    (folder / f"{name}.{fmt}.{precision}.bin").write_bytes(b"weights")
    manifest = {"schema": SCHEMA, "artifact": {"file": f"{name}.{fmt}.{precision}.bin", "size_bytes": 2_500_000},
                "format": fmt, "precision": precision, "runtime": fmt, "model": {"name": name},
                "weights": {"source": "seeded"}, "export_seconds": 12.5, "export_peak_rss_mb": 900,
                "verification": {"passed": True, "cosine_min": cosine, "images": 132, "image_set": "evaluation",
                                 "cpu_classes": {"x86-vnni": {"passed": True, "emulated": False},
                                                 "x86-no-vnni": {"passed": True, "emulated": "qemu"}}},
                "job": {"key": key}, "created": "2026-12-06T10:00:00+00:00"}
    (folder / f"{name}.{fmt}.{precision}.json").write_text(json.dumps(manifest))


def _folder(tmp_path: Path) -> Path:
    _artifact(tmp_path, "expert-bird", "tflite", "int8", 0.97, "k1")
    _artifact(tmp_path, "expert-bird", "onnx", "int8", 0.99, "k2")
    jobs = {"k1": {"status": "ok", "artifact": "expert-bird.tflite.int8.bin", "host": "box", "node": "n1",
                   "attempts": 1, "memory_request_mb": 4000},
            "k2": {"status": "ok", "artifact": "expert-bird.onnx.int8.bin", "host": "box", "node": "n2", "attempts": 2},
            "k3": {"status": "failed", "reason": "killed for memory twice (Ray's memory monitor)",
                   "model": "expert-cat", "format": "onnx", "precision": "int8", "weights": "seeded", "attempts": 2},
            "k4": {"status": "ok", "artifact": "expert-cat.tflite.int8.bin", "model": "expert-cat", "format": "tflite",
                   "precision": "int8", "weights": "seeded"}}
    (tmp_path / LEDGER).write_text(json.dumps({"schema": LEDGER_SCHEMA, "jobs": jobs}))
    machine = {"host": "bench-box", "cpu": "EPYC", "cpu_class": "x86-vnni", "threads": 2}
    bench = {"machine": machine, "rows": [
        {"artifact": "/elsewhere/expert-bird.tflite.int8.bin", "device": "cpu", "status": "ok", "reference": False,
         "runtime": "litert", "latency_ms": {"p50": 4.25}, "speedup_vs_reference": 3.5},
        {"artifact": "/elsewhere/expert-bird.onnx.int8.bin", "device": "gpu", "status": "not available",
         "reference": False, "reason": "not available here"}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    return tmp_path


def test_a_row_per_artifact_and_failed_job_with_latency_from_the_saved_bench(tmp_path):
    report = catalog_report.build(_folder(tmp_path))
    assert report["counts"] == {"failed": 1, "missing": 1, "ok": 2} and report["benches"] == ["bench.json"]
    rows = {(row["model"], row["format"]): row for row in report["rows"]}
    tflite = rows[("expert-bird", "tflite")]
    assert tflite["agreement"] == {"cosine_min": 0.97} and tflite["size_mb"] == 2.5 and tflite["peak_memory_mb"] == 900
    assert tflite["verified_on"] == ["x86-vnni", "x86-no-vnni (emulated)"] and tflite["job"]["node"] == "n1"
    assert tflite["latency"]["cpu"]["p50_ms"] == 4.25 and tflite["latency"]["cpu"]["machine"]["host"] == "bench-box"
    assert rows[("expert-bird", "onnx")]["latency"] == {}  # a row that did not run gives no figure
    assert "killed for memory twice" in rows[("expert-cat", "onnx")]["reason"]
    assert rows[("expert-cat", "tflite")]["status"] == "missing"  # the ledger says done; the artifact is gone


def test_the_report_is_written_into_the_folder(tmp_path, capsys):
    """Run without the export extra too (make test's runtimes-only tier): the report needs no TensorFlow or Ray."""
    folder = _folder(tmp_path)
    assert main(["report", str(folder)]) == 1  # rows that are not ok: the exit status says so
    out = capsys.readouterr().out
    assert "4 (model, format, precision) rows: 1 failed, 1 missing, 2 ok" in out
    assert "| expert-bird | tflite | int8 | ok | 2.5 | 12.5 | 900 | 0.97 |" in out and "cpu 4.25 ms (3.50× ref)" in out
    record = yaml.safe_load((folder / "perf" / "expert-bird.yaml").read_text())
    assert record["artifacts"]["onnx-int8"]["export"]["attempts"] == 2
    assert json.loads((folder / "hubedge-report.json").read_text())["schema"] == "hubedge.report/1"
    assert (folder / "hubedge-report.md").read_text() == out
    # the report's own files are neither bench reports nor manifests: read again, the same four rows
    assert len(catalog_report.build(folder)["rows"]) == 4


def test_a_folder_that_is_not_there_is_refused_in_one_line(tmp_path):
    with pytest.raises(InvalidInputError, match="no folder at .*; give the --output folder of an export"):
        catalog_report.build(tmp_path / "nothing")
