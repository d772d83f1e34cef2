"""The exporter's Python API (``hubedge.exporter.export``): the same artifacts as the CLI, and refusals before any
work."""

from __future__ import annotations

import json
import os

import pytest

from hubedge import exporter
from hubedge.cli import main
from hubedge.runtimes.errors import HubedgeError, InvalidInputError, UnsupportedError

STABLE = ("model", "weights", "graph", "input", "output", "quantization", "precision", "format")


def test_export_from_python_writes_what_the_cli_writes(tiny_classifier, tmp_path, capsys):
    said: list[str] = []
    model = str(tiny_classifier.savedmodel_dir)  # the same model, loaded the same way by both
    results = exporter.export(model, weights="hub", formats=["tflite"], precisions="none", output=tmp_path / "api",
                              progress=said.append)
    assert [(r.format, r.precision) for r in results] == [("tflite", "fp32")]
    assert any("written in" in line for line in said)
    assert main(["export", "--model", model, "--weights", "hub", "--format", "tflite",
                 "--output", str(tmp_path / "cli")]) == 0
    name = results[0].artifact.name
    assert (tmp_path / "cli" / name).read_bytes() == results[0].artifact.read_bytes()  # byte for byte
    ours, theirs = (json.loads((tmp_path / side / name).with_suffix(".json").read_text()) for side in ("api", "cli"))
    assert ours["artifact"]["sha256"] == theirs["artifact"]["sha256"]
    for key in STABLE:
        assert ours.get(key) == theirs.get(key), key
    assert ours["verification"]["cosine_min"] == theirs["verification"]["cosine_min"]


def test_an_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        exporter.ExportOptions(int8_inputs="uint8")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="ExportOptions"):
        exporter.export("bit-m-r50x1-in21k", options={"int8_io": "uint8"})  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="int8_io must be one of"):
        exporter.ExportOptions(int8_io="int4")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="calibration_size"):
        exporter.ExportOptions(calibration_size=0)


def test_an_option_no_requested_format_takes_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from hubedge.exporter import sources

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(sources, "load_model", never)
    for formats, options, why in (
        ("onnx", exporter.ExportOptions(int8_io="uint8"), r"int8_io \(--int8-io\) applies to tflite int8"),
        ("onnx", exporter.ExportOptions(int8_io="uint8", calibration_size=70), "applies to tflite int8"),
        ("onnx", exporter.ExportOptions(tflite_int8_recipe="full"), "applies to tflite int8 exports only"),
        ("tflite", exporter.ExportOptions(int8_cpu="vnni"), "--int8-cpu vnni applies to openvino"),
    ):
        with pytest.raises(HubedgeError, match=why):
            exporter.export("bit-m-r50x1-in21k", weights="seeded", formats=formats, precisions="int8",
                            output=tmp_path, options=options)
    with pytest.raises(UnsupportedError, match="unsupported format/precision"):
        exporter.export("bit-m-r50x1-in21k", formats="qnn", precisions="fp16", output=tmp_path)


def test_a_failed_verification_carries_its_metric_value_and_floor(tiny_classifier, tmp_path, monkeypatch):
    from hubedge.exporter import pipeline
    from hubedge.exporter.formats import Floor

    monkeypatch.setattr(pipeline, "floor_for", lambda fmt, precision, source: Floor(cosine=1.5))
    with pytest.raises(exporter.ExportsFailed) as caught:
        exporter.export(tiny_classifier, formats="onnx", precisions="none", output=tmp_path)
    assert caught.value.results == [] and [(f, p) for f, p, _ in caught.value.failures] == [("onnx", "fp32")]
    error = caught.value.failures[0][2]
    assert isinstance(error, exporter.VerificationFailed)
    (short,) = error.shortfalls
    assert (short.metric, short.limit, short.where) == ("cosine_min", 1.5, "") and 0.99999 < short.value <= 1.0
    assert error.verification["shortfalls"] == [{"metric": "cosine_min", "value": short.value, "limit": 1.5,
                                                 "where": "", "detail": ""}]
    assert not list(tmp_path.glob("*.onnx"))  # nothing published


def test_each_format_gets_only_the_options_its_row_declares_and_refuses_others_itself(tmp_path):
    from hubedge.exporter.formats import FORMATS
    from hubedge.exporter.pipeline import export_one

    options = exporter.ExportOptions(int8_io="uint8", int8_cpu="vnni", calibration_size=80, graph="as-is")
    assert FORMATS["tflite"].options_for("int8", options) == exporter.ExportOptions(
        int8_io="uint8", calibration_size=80, graph="as-is")
    assert FORMATS["openvino"].options_for("int8", options) == exporter.ExportOptions(
        int8_cpu="vnni", calibration_size=80, graph="as-is")
    assert FORMATS["onnx"].options_for("fp32", options) == exporter.ExportOptions(graph="as-is")
    # called directly, a format refuses what it does not take, before it loads or converts anything
    with pytest.raises(UnsupportedError, match=r"onnx int8 does not take int8_io \(--int8-io\)"):
        export_one(None, FORMATS["onnx"], "int8", tmp_path, options=exporter.ExportOptions(int8_io="uint8"))
    assert not list(tmp_path.iterdir())


def test_an_option_only_some_requested_formats_take_is_noted_for_the_others():
    from hubedge.exporter.api import check_options, planned_pairs

    said: list[str] = []
    pairs = planned_pairs("tflite,onnx", "int8", said.append)
    check_options(pairs, exporter.ExportOptions(int8_io="uint8"), verify=False, progress=said.append)
    assert said == ["note: int8_io (--int8-io) applies to tflite int8; onnx int8 ignore(s) it"]


@pytest.mark.export
def test_a_process_that_exports_sends_no_openvino_telemetry():
    """OpenVINO's converter and NNCF fall back to sending nothing when openvino_telemetry cannot be imported; the
    exporter makes it so (their sender forks from a thread, which once deadlocked a test run). A process of its own:
    NNCF also stays quiet under pytest, which would hide the difference."""
    import subprocess
    import sys

    check = ("import hubedge.exporter, openvino.tools.ovc.convert_impl as ovc, nncf.telemetry.wrapper as nncf; "
             "print(ovc.tm.__name__, type(nncf.telemetry).__name__)")
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "HUBEDGE_OPENVINO_TELEMETRY")}
    quiet = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "MagicMock"], quiet.stderr[-1000:]
    kept = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                          env={**env, "HUBEDGE_OPENVINO_TELEMETRY": "1"})
    assert kept.stdout.split() == ["openvino_telemetry", "NNCFTelemetry"], kept.stderr[-1000:]
