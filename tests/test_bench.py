"""hubedge bench end to end on tiny-twin artifacts: rows for every artifact × device, and the reports."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hubedge.benchmarks.runner import REFERENCE_RUNS_FACTOR, pair_accuracy_aware
from hubedge.cli import main
from hubedge.runtimes.devices import status


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# slow (about a minute): five artifacts on every device at two batch sizes, each row paired with the TF reference
@pytest.fixture(scope="module")
def bench_report(tiny_exports, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    artifacts = [str(tiny_exports[pair].artifact) for pair in
                 (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "int8"), ("openvino", "int8"), ("qnn", "int8"))]
    code = main(["bench", *artifacts, "--device", "all", "--runs", "3", "--warmup", "1", "--batch", "1,4",
                 "--threads", "2", "--json", str(out / "r.json"), "--markdown", str(out / "r.md"),
                 "--csv", str(out / "r.csv"), "--plot", str(out / "r.png")])
    return code, out, artifacts


# slow (2-3 minutes): the first test of its worker to ask for every tiny pair, so it waits for all of them to be
# exported and verified (the other tests of the unit then find them made)
def test_bench_finds_the_artifacts_a_folder_holds(tiny_exports):
    from hubedge.benchmarks.runner import find_artifacts

    expected = {result.artifact for result in tiny_exports.values()}  # exports every pair (they are made lazily)
    folder = tiny_exports[("tflite", "fp32")].artifact.parent
    assert set(find_artifacts([str(folder)])) == expected
    artifact = tiny_exports[("onnx", "int8")].artifact
    assert find_artifacts([str(artifact.with_suffix(".json")), str(artifact)]) == [artifact]  # by its manifest


def test_bench_reports_every_artifact_and_device_beside_the_reference(bench_report):
    code, out, artifacts = bench_report
    report = _strict((out / "r.json").read_text())
    rows = report["rows"]
    assert code == 0 and report["machine"]["threads"] == 2 and report["machine"]["cores"] >= 1
    reference = rows[0]
    assert reference["reference"] and reference["runtime"] == "tf" and reference["status"] == "ok"
    assert reference["agreement"]["top1"] == 1.0 and reference["speedup_vs_reference"] == 1.0
    # every ratio's denominator is timed longer than the rows it divides
    assert reference["runs"] == REFERENCE_RUNS_FACTOR * rows[1]["runs"]
    assert {(r["artifact"], r["device"]) for r in rows[1:]} == {(a, d) for a in artifacts for d in ("cpu", "gpu", "npu")}
    for row in rows[1:]:
        available = status(row["runtime"], row["device"]).available
        if not available:
            assert row["status"] == "not available" and row["reason"].startswith("not available here: ")
            assert "latency_ms" not in row and "agreement" not in row
        elif row["status"] == "ok":
            assert set(row["latency_ms"]) == {"p50", "p90", "p99", "mean", "std"} and row["latency_ms"]["p50"] > 0
            assert set(row["throughput"]) == {"1", "4"} and row["load_s"] >= 0 and row["peak_rss_mb"] > 0
            assert {"top1", "top5", "cosine", "sqnr_db"} <= set(row["agreement"]) and row["speedup_vs_reference"] > 0
            paired = row["vs_reference"]  # × ref comes from blocks timed alternately with the reference
            assert paired["blocks"] == 6 and paired["calls"] == 5 and paired["reference_p50_ms"] > 0
            assert row["speedup_vs_reference"] == round(1.0 / paired["ratio"], 3)
        else:
            assert row["status"] == "failed" and not row["targeted"] and row["reason"]
    cpu_rows = [r for r in rows[1:] if r["device"] == "cpu"]
    assert all(r["status"] == "ok" for r in cpu_rows)


def test_bench_writes_markdown_and_csv_tables(bench_report):
    _, out, artifacts = bench_report
    markdown = (out / "r.md").read_text()
    assert "| artifact |" in markdown and "TF reference (SavedModel)" in markdown and "not available here" in markdown
    assert "timed in 6 blocks of 5 calls that alternate with the reference" in markdown
    table = list(csv.reader((out / "r.csv").open()))
    assert table[0][:3] == ["artifact", "weights", "format"] and len(table) == 1 + 1 + 3 * len(artifacts)


def test_bench_draws_latency_against_agreement_with_the_pareto_front(bench_report):
    from PIL import Image

    from hubedge.benchmarks.plot import FRONT_COLOUR, POINT_COLOUR, REFERENCE_COLOUR

    _, out, _ = bench_report
    with Image.open(out / "r.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 300
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)

    def count(colour: str) -> int:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int(np.sum(np.abs(pixels - rgb).sum(axis=1) < 30))

    # the artifacts' points, the reference's star and the front's line and rings are all drawn
    assert count(POINT_COLOUR) > 100 and count(REFERENCE_COLOUR) > 30 and count(FRONT_COLOUR) > 100
    assert not list(out.glob(".*partial"))


def test_the_vendor_timers_cross_check_our_timing(tiny_exports, tmp_path, capsys):
    """benchmark_app and litert-benchmark time the same artifacts; ONNX Runtime ships no timer and says so."""
    artifacts = [str(tiny_exports[(name, "fp32")].artifact) for name in ("tflite", "openvino", "onnx")]
    assert main(["bench", *artifacts, "--runs", "5", "--warmup", "1", "--threads", "2", "--vendor-check",
                 "--json", str(tmp_path / "r.json")]) == 0
    rows = {row["runtime"]: row for row in _strict((tmp_path / "r.json").read_text())["rows"] if not row["reference"]}
    for runtime, tool in (("litert", "litert-benchmark"), ("openvino", "benchmark_app")):
        vendor = rows[runtime]["vendor"]
        assert vendor["tool"] == tool and vendor["p50_ms"] > 0 and vendor["mean_ms"] > 0
        assert len(vendor["rounds"]) == 3  # each run of the tool between two fresh timings of ours
        for first, second in zip(vendor["rounds"], vendor["rounds"][1:]):
            assert first["hubedge_around_ms"][1] == second["hubedge_around_ms"][0]
        for round_ in vendor["rounds"]:
            (before, after), theirs = round_["hubedge_around_ms"], round_["tool_p50_ms"]
            ours = (before + after) / 2
            rounding = 5e-4 + (5e-4 / ours + 5e-4 / theirs) * (ours / theirs)  # every figure is kept to 0.001 ms
            assert before > 0 and after > 0 and round_["gap"] == pytest.approx(ours / theirs - 1, abs=rounding)
        assert isinstance(vendor["verdict"], bool)
    assert "p50_ms" not in rows["onnxruntime"]["vendor"] and "no timer" in rows["onnxruntime"]["vendor"]["reason"]
    for row in rows.values():  # what predict() adds over the runtime's own call, measured alongside
        figures = row["predict_overhead"]
        assert figures["direct_p50_ms"] > 0 and figures["predict_p50_ms"] > 0
        predict, direct = figures["predict_p50_ms"], figures["direct_p50_ms"]
        # both are reported to 0.001 ms, which on a sub-millisecond tiny twin moves their ratio by more than the
        # overhead's own rounding (0.056 against 0.0548 from the rounded times, once): allow for both
        rounding = 5e-4 + (5e-4 / predict + 5e-4 / direct) * (predict / direct)
        assert figures["overhead"] == pytest.approx(predict / direct - 1, abs=rounding)
    out = capsys.readouterr().out
    assert "- " + Path(artifacts[0]).name + ": litert-benchmark " in out and " between " in out
    assert "- " + Path(artifacts[1]).name + ": benchmark_app " in out
    assert "predict() against the runtime's own call" in out


def test_pareto_front_keeps_only_points_nothing_beats():
    from hubedge.benchmarks.plot import pareto_front

    points = [(10.0, 0.90), (5.0, 0.80), (20.0, 1.00), (12.0, 0.85), (5.0, 0.70), (30.0, 1.00)]
    # (12, .85) loses to (10, .90); (5, .70) to (5, .80); (30, 1.0) to (20, 1.0)
    assert pareto_front(points) == [1, 0, 2]
    assert pareto_front([(1.0, 0.5)]) == [0] and pareto_front([]) == []
    assert pareto_front([(3.0, 0.9), (3.0, 0.9)]) == [0, 1]  # equal points do not beat each other


def test_the_plot_is_refused_before_the_run_without_matplotlib(tiny_exports, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    artifact = str(tiny_exports[("tflite", "fp32")].artifact)
    assert main(["bench", artifact, "--plot", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "hubedge[plot]" in err and "reference" not in err  # refused before any benchmarking


def test_bench_refuses_a_folder_without_manifests(tmp_path, capsys):
    (tmp_path / "report.json").write_text('{"rows": []}')  # JSON that is not a manifest is not an artifact
    assert main(["bench", str(tmp_path)]) == 2
    assert "no artifacts with manifests" in capsys.readouterr().err


@pytest.mark.timing  # the false-alarm half is a claim about timing noise: make test runs it with nothing else running
def test_the_gate_fails_on_a_doctored_baseline_and_raises_no_false_alarm_on_a_second_bench(tiny_exports, tmp_path,
                                                                                          capsys):
    """Two benches of the same tiny artifacts, the second against the first as its baseline at the default
    --max-slowdown: the significance test and the one re-timing keep the gate quiet on timing noise."""
    artifacts = [str(tiny_exports[(fmt, "fp32")].artifact) for fmt in ("tflite", "onnx")]
    common = ["bench", *artifacts, "--runs", "3", "--warmup", "1"]
    assert main([*common, "--save-baseline", str(tmp_path / "base.json")]) == 0
    baseline = _strict((tmp_path / "base.json").read_text())
    assert all(len(row["vs_reference"]["block_ratios"]) == 6 for row in baseline["rows"] if not row["reference"])
    capsys.readouterr()
    assert main([*common, "--baseline", str(tmp_path / "base.json"), "--json", str(tmp_path / "again.json")]) == 0
    assert "passed" in capsys.readouterr().err
    assert _strict((tmp_path / "again.json").read_text())["gate"]["passed"] is True
    for row in baseline["rows"]:
        if not row["reference"]:  # the baseline claims the artifacts were ten times faster, in every block
            row["latency_ms"]["p50"] /= 10.0
            row["vs_reference"]["ratio"] /= 10.0
            row["vs_reference"]["block_ratios"] = [ratio / 10.0 for ratio in row["vs_reference"]["block_ratios"]]
    (tmp_path / "doctored.json").write_text(json.dumps(baseline))
    assert main([*common, "--baseline", str(tmp_path / "doctored.json"), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert "gate: rows slowed down past --max-slowdown; timing 2 artifact(s) once more" in err
    assert "REGRESSION: tiny-bit-ilsvrc tflite fp32 on litert/cpu (" in err and "slower relative to the TF" in err
    assert "significant (Mann-Whitney U p = " in err
    gate = _strict((tmp_path / "r.json").read_text())["gate"]
    assert gate["passed"] is False and len(gate["regressions"]) == 2 and len(gate["retimed"]) == 2


def test_pairing_can_be_switched_off_and_then_divides_the_separate_p50s(tiny_exports, tmp_path):
    artifact = str(tiny_exports[("onnx", "fp32")].artifact)
    assert main(["bench", artifact, "--runs", "3", "--warmup", "1", "--paired-blocks", "0",
                 "--json", str(tmp_path / "r.json")]) == 0
    reference, row = _strict((tmp_path / "r.json").read_text())["rows"]
    assert "vs_reference" not in row
    assert row["speedup_vs_reference"] == round(reference["latency_ms"]["p50"] / row["latency_ms"]["p50"], 3)
    with pytest.raises(SystemExit):
        main(["bench", artifact, "--paired-blocks", "-1"])


@pytest.mark.parametrize("precision, expected", [("bf16", "bf16"), ("fp32", "f32"), ("int8", "f32")])
def test_benchmark_app_runs_an_openvino_artifact_at_the_precision_the_adapter_uses(monkeypatch, tmp_path,
                                                                                   precision, expected):
    import subprocess

    from hubedge.benchmarks import vendor

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        (tmp_path / "benchmark_report.json").write_text(
            json.dumps({"execution_results": {"latency (ms)": "10.0", "avg latency": "10.5"}}))

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(vendor, "_tool", lambda name: name)
    monkeypatch.setattr(vendor.tempfile, "TemporaryDirectory", lambda prefix: _Folder(tmp_path))
    row = {"runtime": "openvino", "artifact": "m.xml", "precision": precision, "latency_ms": {"p50": 11.0}}
    figures = vendor.vendor_timing(row, threads=2, runs=5, warmup=1, side=224)
    assert figures["p50_ms"] == 10.0 and figures["gap"] == pytest.approx(0.1)
    assert commands[0][commands[0].index("-infer_precision") + 1] == expected


@pytest.mark.parametrize("ours, theirs, says", [
    ((10.5, 11.5, 11.0, 11.0), (10.0, 10.0, 10.0), "gap +10.0%, within 10%"),
    # one round falls on a slow spell of the machine while our brackets stay steady: the median outvotes it
    ((10.0, 10.2, 10.1, 10.0), (10.0, 14.0, 10.1), "gap -0.5%, within 10%"),
    ((10.0, 10.2, 10.1, 10.0), (7.0, 7.1, 7.2), "gap +43.0%, over 10%: check the timing"),
    ((8.0, 14.0, 8.0, 14.0), (10.0, 10.0, 10.0), "no verdict: the machine changed speed during 3 of 3 rounds"),
    ((10.0, 10.0, 10.0, 10.0), (7.0, 10.0, 14.0), "no verdict: the steady rounds disagree (+42.9%, +0.0%, -28.6%)"),
])
def test_the_vendor_check_brackets_each_run_of_the_tool_with_our_own_timing(monkeypatch, tmp_path, ours, theirs,
                                                                            says):
    """Our side is timed right before and after each of the tool's rounds, not taken from the row timed long
    before; the gap is the median over the rounds whose brackets agree, and a machine that changed speed, or
    rounds that disagree, give no verdict instead of a figure."""
    import subprocess

    from hubedge.benchmarks import vendor
    from hubedge.benchmarks.report import vendor_lines

    tool_medians = iter(theirs)

    def fake_run(command, **kwargs):
        median = next(tool_medians)
        (tmp_path / "benchmark_report.json").write_text(
            json.dumps({"execution_results": {"latency (ms)": str(median), "avg latency": str(median)}}))

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(vendor, "_tool", lambda name: name)
    monkeypatch.setattr(vendor.tempfile, "TemporaryDirectory", lambda prefix: _Folder(tmp_path))
    timings = iter(ours)
    row = {"runtime": "openvino", "artifact": "m.xml", "precision": "fp32", "latency_ms": {"p50": 30.0}}
    row["vendor"] = vendor.vendor_timing(row, threads=2, runs=5, warmup=1, side=224, ours_now=lambda: next(timings))
    assert [r["hubedge_around_ms"] for r in row["vendor"]["rounds"]] == [list(ours[i:i + 2]) for i in range(3)]
    line = vendor_lines({"rows": [row]})[-1]
    assert says in line and "between" in line, line
    assert row["vendor"]["verdict"] is ("no verdict" not in line)


class _Folder:
    """A stand-in for TemporaryDirectory that hands out an existing folder."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return str(self.path)

    def __exit__(self, *exc):
        return False


def _bench_row(format: str, precision: str, variant: str = "", p50: float = 1.0, ratio: float | None = None,
               **extra) -> dict:
    return {"model": "m", "format": format, "precision": precision, "variant": variant, "device": "cpu",
            "status": "ok", "latency_ms": {"p50": p50}, "reference_artifact": "m.fp32",
            **({"vs_reference": {"ratio": ratio}} if ratio else {}), **extra}


def test_an_accuracy_aware_row_is_timed_against_plain_int8_of_its_format_and_the_reference_row_is_left_alone():
    reference = _bench_row("tf-reference", "fp32", "accuracy-aware", reference=True)  # a group's first was aware
    paired = [_bench_row("tflite", "int8", p50=5.0, ratio=0.25), _bench_row("tflite", "int8", "accuracy-aware",
                                                                           p50=9.0, ratio=0.3333)]
    unpaired = [_bench_row("onnx", "int8", p50=5.0), _bench_row("onnx", "int8", "accuracy-aware", p50=6.0)]
    alone = _bench_row("openvino", "int8", "accuracy-aware")
    pair_accuracy_aware([reference, *paired, *unpaired, alone])
    assert "note" not in reference and "note" not in paired[0] and "note" not in unpaired[0]
    assert paired[1]["vs_plain_int8"] == 1.333 and "each paired with the reference" in paired[1]["note"]
    assert unpaired[1]["vs_plain_int8"] == 1.2 and unpaired[1]["note"] == "1.20× plain int8's p50"
    assert "vs_plain_int8" not in alone and alone["note"].startswith("no plain int8 artifact of this format")


def test_the_catalog_report_takes_each_rows_latency_from_a_bench_saved_in_the_folder(tiny_exports, tmp_path, capsys):
    from hubedge.runtimes.manifest import manifest_path

    exported = tiny_exports[("onnx", "fp32")].artifact
    for path in (exported, manifest_path(exported)):
        shutil.copy(path, tmp_path / path.name)
    assert main(["report", str(tmp_path)]) == 0
    before = _strict((tmp_path / "hubedge-report.json").read_text())
    assert len(before["rows"]) == 1 and before["rows"][0]["latency"] == {} and before["benches"] == []
    assert main(["bench", str(tmp_path), "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "bench.json")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--json"]) == 0
    row = _strict(capsys.readouterr().out)["rows"][0]
    bench = _strict((tmp_path / "bench.json").read_text())
    measured = next(r for r in bench["rows"] if not r["reference"])
    assert row["latency"]["cpu"]["p50_ms"] == round(measured["latency_ms"]["p50"], 3)
    assert row["latency"]["cpu"]["machine"]["host"] == bench["machine"]["host"]
    assert row["latency"]["cpu"]["bench"] == "bench.json"
    assert "cpu " in (tmp_path / "hubedge-report.md").read_text()
