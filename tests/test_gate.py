"""The CI gate compares by ratios to each run's own reference row."""

from __future__ import annotations

import copy
import sys

import pytest

from hubedge.benchmarks.gate import GateOptions, compare, judge, require_scipy
from hubedge.runtimes.errors import HubedgeError


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


def _blocked(report: dict, ratios: list[float]) -> dict:
    """The report with its artifact row timed in blocks paired with the reference, at these per-block ratios."""
    report["rows"][1]["vs_reference"] = {"ratio": sorted(ratios)[len(ratios) // 2], "block_ratios": ratios}
    return report


STEADY = [0.2500, 0.2520, 0.2480, 0.2510, 0.2490, 0.2505]


def test_a_slowdown_every_block_shows_fails_as_significant():
    slower = [ratio * 1.2 for ratio in STEADY]
    verdict = judge(_blocked(_report(100.0, 30.0), slower), _blocked(_report(100.0, 25.0), STEADY), GateOptions())
    assert not verdict.passed
    assert "20% slower" in verdict.regressions[0].message
    assert "significant (Mann-Whitney U p = 0.0011 over 6 + 6 blocks)" in verdict.regressions[0].message


def test_a_median_past_the_threshold_that_the_blocks_do_not_bear_out_is_a_note_not_a_failure():
    """Noisy blocks: the median ratio moved 20 %, but today's blocks overlap the baseline's."""
    noisy = [0.24, 0.31, 0.25, 0.32, 0.26, 0.30]
    verdict = judge(_blocked(_report(100.0, 30.0), noisy), _blocked(_report(100.0, 25.0), STEADY), GateOptions())
    assert verdict.passed
    assert len(verdict.notes) == 1 and "but not significant (Mann-Whitney U p = " in verdict.notes[0]
    assert "not counted" in verdict.notes[0]
    # the same blocks do count at a looser significance level
    assert not judge(_blocked(_report(100.0, 30.0), noisy), _blocked(_report(100.0, 25.0), STEADY),
                     GateOptions(significance=0.5)).passed


def test_without_enough_blocks_a_slowdown_is_judged_on_the_threshold_alone_and_says_so():
    few = judge(_blocked(_report(100.0, 30.0), [0.3, 0.3, 0.3]), _blocked(_report(100.0, 25.0), [0.25] * 3),
                GateOptions())
    assert "judged on the threshold alone: 3 + 3 blocks are too few for p < 0.01" in few.regressions[0].message
    older = judge(_blocked(_report(100.0, 30.0), [r * 1.2 for r in STEADY]), _report(100.0, 25.0), GateOptions())
    assert "no per-block ratios on the baseline's side" in older.regressions[0].message


def test_a_row_that_slowed_down_is_timed_once_more_and_the_second_run_decides():
    baseline = _blocked(_report(100.0, 25.0), STEADY)
    slow = _blocked(_report(100.0, 30.0), [ratio * 1.2 for ratio in STEADY])
    asked: list[list[str]] = []

    def recovered(artifacts: list[str]) -> dict:
        asked.append(artifacts)
        return _blocked(_report(100.0, 25.0), STEADY)

    verdict = judge(copy.deepcopy(slow), baseline, GateOptions(), recovered)
    assert verdict.passed and asked == [["m.tflite"]] and verdict.retimed == ["m.tflite"]
    assert verdict.notes[0].startswith("re-timed once: m tflite int8 on x/cpu: 20% slower")
    still = judge(copy.deepcopy(slow), baseline, GateOptions(), lambda _: copy.deepcopy(slow))
    assert not still.passed and len(still.regressions) == 1
    assert still.as_dict(GateOptions())["test"] == "one-sided Mann-Whitney U test on the per-block ratios"
    # a regression that is no slowdown is not re-timed
    broken = _report(100.0, 25.0)
    broken["rows"][1].update(status="failed", reason="cannot load")
    assert judge(broken, baseline, GateOptions(), lambda _: pytest.fail("re-timed")).retimed == []


def test_a_baseline_of_another_cpu_class_is_refused_and_a_cluster_bench_is_compared_class_by_class():
    def on(report: dict, cpu_class: str, per_row: bool = False) -> dict:
        if per_row:
            for row in report["rows"]:
                row.update(cpu_class=cpu_class, node=f"node-{cpu_class}")
        else:
            report["machine"] = {"cpu_class": cpu_class}
        return report

    with pytest.raises(HubedgeError, match="timed on x86-vnni CPUs and this run on x86-no-vnni; .* one baseline per"):
        compare(on(_report(100.0, 25.0), "x86-no-vnni"), on(_report(100.0, 25.0), "x86-vnni"), GateOptions())
    cluster = {"rows": on(_report(100.0, 25.0), "x86-vnni", True)["rows"] + on(_report(100.0, 40.0), "arm64", True)["rows"]}
    problems = compare(cluster, on(_report(100.0, 25.0), "x86-vnni"), GateOptions())
    assert problems == []  # the arm64 rows have no baseline; the x86-vnni ones match theirs, beside their own reference
    slower = {"rows": on(_report(100.0, 25.0), "arm64", True)["rows"] + on(_report(100.0, 40.0), "x86-vnni", True)["rows"]}
    assert "m tflite int8 on x/cpu (x86-vnni): 60% slower" in compare(slower, on(_report(100.0, 25.0), "x86-vnni"),
                                                                        GateOptions())[0]


def test_without_scipy_the_gate_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    with pytest.raises(HubedgeError, match=r"needs scipy: pip install 'hubedge\[gate\]'"):
        require_scipy()


def test_in_recorded_mode_a_row_is_timed_again_beside_the_artifact_its_latency_is_paired_with():
    """Re-timing the slow artifact alone would leave it without its latency reference, so without a ratio."""
    def report(int8_ratio: float) -> dict:
        rows = [{"artifact": "m.fp32", "model": "m", "format": "tflite", "precision": "fp32", "runtime": "x",
                 "device": "cpu", "status": "ok", "reference": True, "reference_kind": "artifact",
                 "latency_ms": {"p50": 20.0}, "agreement": {"cosine_min": 1.0}},
                {"artifact": "m.int8", "model": "m", "format": "tflite", "precision": "int8", "runtime": "x",
                 "device": "cpu", "status": "ok", "reference_artifact": "m.fp32", "latency_ms": {"p50": 5.0},
                 "vs_reference": {"ratio": int8_ratio}, "agreement": {"cosine_min": 0.99}}]
        return {"reference_mode": "recorded", "rows": rows}

    asked: list[list[str]] = []

    def retime(artifacts: list[str]) -> dict:
        asked.append(artifacts)
        return report(0.5)

    verdict = judge(report(0.5), report(0.25), GateOptions(), retime)
    assert asked == [["m.int8", "m.fp32"]] and verdict.retimed == ["m.int8"]
    assert not verdict.passed and "100% slower relative to its reference artifact" in verdict.regressions[0].message
