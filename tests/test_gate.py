"""The CI gate compares by ratios to each run's own reference row."""

from __future__ import annotations

import copy

import pytest

from benchmarks.gate import GateOptions, compare
from runtimes.errors import HubedgeError


def _report(reference_ms: float, tflite_ms: float, top1: float = 1.0) -> dict:
    def row(fmt, ms, reference=False):
        return {"artifact": f"m.{fmt}", "model": "m", "format": fmt, "precision": "fp32" if reference else "int8", "runtime": "x",
                "device": "cpu", "status": "ok", "reference": reference, "latency_ms": {"p50": ms},
                "agreement": {"top1": top1, "cosine_min": 0.99}}

    return {"rows": [row("tf-reference", reference_ms, True), row("tflite", tflite_ms)]}


def test_an_equal_run_passes():
    baseline = _report(100.0, 25.0)
    assert compare(copy.deepcopy(baseline), baseline, GateOptions()) == []


def test_a_slower_machine_that_keeps_the_ratios_passes():
    assert compare(_report(200.0, 50.0), _report(100.0, 25.0), GateOptions()) == []


def test_a_relative_slowdown_fails_with_a_readable_message():
    problems = compare(_report(100.0, 30.0), _report(100.0, 25.0), GateOptions(max_slowdown=0.10))
    assert len(problems) == 1
    assert "m tflite int8 on x/cpu: 20% slower relative to the TF reference" in problems[0]
    assert compare(_report(100.0, 30.0), _report(100.0, 25.0), GateOptions(max_slowdown=0.25)) == []


def test_rows_that_stopped_running_or_agree_less_fail():
    broken = _report(100.0, 25.0)
    broken["rows"][1].update(status="failed", reason="cannot load")
    assert "now failed: cannot load" in compare(broken, _report(100.0, 25.0), GateOptions())[0]
    missing = {"rows": _report(100.0, 25.0)["rows"][:1]}
    assert "missing from this run" in compare(missing, _report(100.0, 25.0), GateOptions())[0]
    drifted = compare(_report(100.0, 25.0, top1=0.9), _report(100.0, 25.0), GateOptions(min_top1=0.99))
    assert drifted == ["m tflite int8 on x/cpu: top-1 agreement 0.900 < 0.99"]


def test_the_paired_ratio_is_used_where_the_run_timed_one():
    """Rows timed alternately with their reference are compared by that ratio, not by the two separate p50s."""
    baseline, current = _report(100.0, 25.0), _report(100.0, 25.0)
    baseline["rows"][1]["vs_reference"] = {"ratio": 0.25}
    current["rows"][1]["vs_reference"] = {"ratio": 0.30}  # same p50s, but 20 % slower against its reference
    assert "20% slower relative to the TF reference" in compare(current, baseline, GateOptions())[0]
    current["rows"][1]["vs_reference"] = {"ratio": 0.25}
    current["rows"][1]["latency_ms"]["p50"] = 40.0  # the separate p50 drifted, the paired ratio did not
    assert compare(current, baseline, GateOptions()) == []


def test_recorded_mode_rows_are_compared_with_their_own_reference_artifact():
    def report(fp32_ms: float, int8_ms: float) -> dict:
        rows = [{"artifact": "m.fp32", "model": "m", "format": "tflite", "precision": "fp32", "runtime": "x",
                 "device": "cpu", "status": "ok", "reference": True, "reference_kind": "artifact",
                 "latency_ms": {"p50": fp32_ms}, "agreement": {"cosine_min": 1.0}},
                {"artifact": "m.int8", "model": "m", "format": "tflite", "precision": "int8", "runtime": "x",
                 "device": "cpu", "status": "ok", "reference_artifact": "m.fp32", "latency_ms": {"p50": int8_ms},
                 "agreement": {"cosine_min": 0.99}}]
        return {"reference_mode": "recorded", "rows": rows}

    assert compare(report(40.0, 10.0), report(20.0, 5.0), GateOptions()) == []  # a slower device, same ratio
    assert "50% slower relative to its reference artifact" in compare(report(20.0, 7.5), report(20.0, 5.0), GateOptions())[0]
    with pytest.raises(HubedgeError, match="baseline was taken with --reference-mode tf and this run used recorded"):
        compare(report(20.0, 5.0), _report(100.0, 25.0), GateOptions())
