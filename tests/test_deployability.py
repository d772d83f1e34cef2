"""Ready for the device: fixed shapes (--batch 1), ONNX graphs that NNAPI and CoreML take, the deployability report
from the vendors' own tools, and --require-offload (exporter.verify.deployability, exporter.formats.onnx_mobile)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubedge import runtimes
from hubedge.exporter.options import ExportOptions
from tests.helpers import LazyExports
from tests.test_cli import run


@pytest.fixture(scope="module")
def fixed(tiny_classifier, tmp_path_factory) -> LazyExports:
    """The tiny classifier exported with --batch 1."""
    return LazyExports(tiny_classifier, tmp_path_factory.mktemp("batch1"),
                       [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("tflite", "fp32"),
                        ("ort", "fp32")],
                       ExportOptions(batch=1))


@pytest.fixture(scope="module")
def batch3(tiny_classifier, tmp_path_factory) -> LazyExports:
    """The tiny classifier exported with --batch 3: a fixed batch that the photos do not fill evenly."""
    return LazyExports(tiny_classifier, tmp_path_factory.mktemp("batch3"),
                       [("onnx", "int8"), ("openvino", "int8"), ("ort", "fp32")], ExportOptions(batch=3))


@pytest.fixture(scope="module")
def dynamic(tiny_classifier, tmp_path_factory) -> LazyExports:
    return LazyExports(tiny_classifier, tmp_path_factory.mktemp("dynamic"), [("onnx", "fp32")])


def _manifest(result) -> dict:
    return json.loads(result.artifact.with_suffix(".json").read_text())


def test_batch_1_gives_an_onnx_file_without_a_symbolic_dimension_that_nnapi_and_coreml_take_whole(fixed):
    import onnx

    from hubedge.exporter.formats.onnx import symbolic_dims

    result = fixed[("onnx", "fp32")]
    manifest = _manifest(result)
    assert symbolic_dims(onnx.load(str(result.artifact))) == []
    assert manifest["input"]["shape"][0] == 1 and manifest["input"]["batch"] == 1
    # the BiT graph's Reciprocal (NNAPI lacks it) and its stem's zero Pad (MLProgram lacks it), rewritten and verified
    assert manifest["quantization"]["mobile_rewrites"] == {"reciprocal_to_div": 13, "zero_pad_to_concat": 1}
    assert manifest["verification"]["passed"]
    ort = manifest["deployability"]["ort_mobile"]
    assert ort["static_shapes"] and "with_fixed_shapes" not in ort["nnapi"]
    for provider in ("nnapi", "coreml_mlprogram"):
        part = ort[provider]["as_is"]
        assert part["partitions"] == 1 and part["supported_nodes"] == part["nodes"] and part["verdict"] == "YES"


def test_a_dynamic_batch_is_reported_as_what_keeps_the_accelerators_out(dynamic):
    manifest = _manifest(dynamic[("onnx", "fp32")])
    ort = manifest["deployability"]["ort_mobile"]
    assert manifest["input"]["batch"] == "dynamic" and not ort["static_shapes"] and ort["dynamic_inputs"] == ["images"]
    as_is, fixed_shapes = ort["nnapi"]["as_is"], ort["nnapi"]["with_fixed_shapes"]
    assert as_is["verdict"] == "NO" and as_is["nodes_unsupported_for_dynamic_shapes"] > 0
    assert fixed_shapes["verdict"] == "YES"


def test_int8_qdq_keeps_coreml_out_and_the_report_says_why(fixed):
    ort = _manifest(fixed[("onnx", "int8")])["deployability"]["ort_mobile"]
    assert ort["nnapi"]["as_is"]["verdict"] == "YES"  # NNAPI runs QDQ int8
    mlprogram = ort["coreml_mlprogram"]["as_is"]
    assert mlprogram["verdict"] == "NO" and "ai.onnx:DequantizeLinear" in mlprogram["unsupported_ops"]


def test_fixed_batch_openvino_ort_and_tflite_artifacts_run_several_images(fixed, photos):
    import onnxruntime

    for pair in (("openvino", "fp32"), ("tflite", "fp32"), ("ort", "fp32")):
        result = fixed[pair]
        assert _manifest(result)["input"]["shape"][0] == 1 and _manifest(result)["input"]["batch"] == 1
        outputs = runtimes.load(result.artifact).predict(photos[:3])
        assert outputs.shape == (3, 1000) and np.isfinite(outputs).all()
    session = onnxruntime.InferenceSession(str(fixed[("ort", "fp32")].artifact), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 64, 64, 3]  # the .ort file keeps the static batch
    deploy = fixed[("tflite", "fp32")].deployability
    assert deploy["gpu_delegate"]["compatible"] and deploy["xnnpack"]["whole_graph"]
    assert fixed[("openvino", "fp32")].deployability["openvino"]["cpu"]["coverage"] == 1.0


def test_a_fixed_batch_of_3_is_static_in_the_file_verified_and_fed_3_at_a_time(batch3, photos):
    """Calibration, verification and predict() feed a fixed-batch file exactly its batch, the last call filled up
    with copies: 4 images give the rows that 4 calls of one image (each filled to 3) give."""
    import onnx
    import onnxruntime

    from hubedge.exporter.formats.onnx import symbolic_dims

    for pair in batch3.pairs:
        result = batch3[pair]
        manifest = _manifest(result)
        assert manifest["input"]["shape"][0] == 3 and manifest["input"]["batch"] == 3
        assert manifest["verification"]["passed"] and manifest["verification"]["images"] == 132
        predictor = runtimes.load(result.artifact)
        together = predictor.predict(photos[:4])
        alone = np.concatenate([predictor.predict(photos[i : i + 1]) for i in range(4)])
        assert together.shape == (4, 1000) and np.allclose(together, alone, rtol=1e-4, atol=1e-4)
    assert symbolic_dims(onnx.load(str(batch3[("onnx", "int8")].artifact))) == []
    session = onnxruntime.InferenceSession(str(batch3[("ort", "fp32")].artifact), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [3, 64, 64, 3]


def test_xnnpack_not_taking_the_whole_graph_is_reported(capsys, tiny_classifier, tmp_path):
    """The control: the full-integer recipe leaves GroupNorm's int8 ops to TFLite's own kernels (XNNPACK has none
    for them), and litert-benchmark says the graph is not fully accelerated (unverified: that recipe misses the
    int8 floor on this twin, and the report does not need the reference)."""
    code, out, err = run(capsys, "export", "--model", str(tiny_classifier.savedmodel_dir), "--format", "tflite",
                         "--quantize", "int8", "--tflite-int8-recipe", "full", "--no-verify", "--output", str(tmp_path))
    assert code == 0, err
    manifest = json.loads((tmp_path / "tiny-bit-ilsvrc.tflite.int8.json").read_text())
    assert manifest["deployability"]["xnnpack"]["whole_graph"] is False and "XNNPACK: part of the graph" in out


def test_a_phone_format_too_large_for_a_phone_app_is_written_and_said_so(capsys, tiny_classifier, tmp_path,
                                                                         monkeypatch):
    """The size past which a phone app cannot ship a file (1 GB; a 2 GB R101x3 fp32 .tflite is past it) lowered so
    that the tiny twin is past it: the tflite and onnx files are still written and verified, their summary lines
    and manifests say why a phone is not their place; OpenVINO's file, not made for phones, says nothing."""
    from hubedge.exporter.verify import deployability

    monkeypatch.setattr(deployability, "PHONE_APP_BYTES", 1_000_000)  # the tiny files are about 3.3 MB
    code, out, err = run(capsys, "export", "--model", str(tiny_classifier.savedmodel_dir), "--format",
                         "tflite,onnx,openvino", "--output", str(tmp_path))
    assert code == 0, err
    notes = [line for line in out.splitlines() if "too large to ship in a phone app (over 0.001 GB)" in line]
    assert len(notes) == 2 and all(line.startswith("  deployability: ") for line in notes), out
    for name, fits in (("tflite.fp32", False), ("onnx.fp32", False)):
        manifest = json.loads((tmp_path / f"tiny-bit-ilsvrc.{name}.json").read_text())
        size = manifest["deployability"]["phone_size"]
        assert size["fits"] is fits and size["bytes"] == manifest["artifact"]["size_bytes"] > 1_000_000
        assert manifest["verification"]["passed"]
    openvino = json.loads((tmp_path / "tiny-bit-ilsvrc.openvino.fp32.json").read_text())
    assert "phone_size" not in openvino["deployability"]
    monkeypatch.undo()
    assert deployability.report(tmp_path / "tiny-bit-ilsvrc.onnx.fp32.onnx", "onnx", "onnxruntime",
                                3_300_000)["phone_size"] == {"bytes": 3_300_000, "limit_bytes": 10**9, "fits": True}


def test_require_offload_refuses_a_file_below_the_level_and_writes_nothing(capsys, tiny_classifier, tmp_path):
    model = str(tiny_classifier.savedmodel_dir)
    code, _, err = run(capsys, "export", "--model", model, "--format", "onnx", "--quantize", "none",
                       "--require-offload", "nnapi", "--output", str(tmp_path / "dynamic"))
    assert code != 0 and "refused by --require-offload nnapi" in err and "--batch 1" in err
    assert not [p for p in (tmp_path / "dynamic").iterdir() if p.suffix in (".onnx", ".json")]
    code, out, err = run(capsys, "export", "--model", model, "--format", "onnx", "--quantize", "none", "--batch", "1",
                         "--require-offload", "nnapi", "--output", str(tmp_path / "fixed"))
    assert code == 0, err
    assert "deployability: NNAPI" in out and (tmp_path / "fixed" / "tiny-bit-ilsvrc.onnx.fp32.onnx").is_file()


@pytest.mark.parametrize("argv, says", [
    (["--format", "onnx", "--require-offload", "gpu"], "--require-offload gpu is judged on tflite"),
    (["--format", "onnx", "--batch", "0"], "batch takes a number of images from 1"),
    (["--format", "onnx", "--batch", "257"], "batch takes a number of images from 1"),
    (["--format", "onnx,tflite", "--batch", "4"], "tflite files are batch 1 always; --batch 4 applies to onnx"),
    (["--format", "savedmodel", "--batch", "1"], "batch (--batch) applies to"),
])
def test_offload_and_batch_requests_no_format_can_meet_are_refused_before_any_work(capsys, argv, says):
    code, _, err = run(capsys, "export", "--model", "no/such/model", *argv)
    assert code == 2 and says in err and "loading" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.export  # onnx builds the graph
def test_the_mobile_rewrites_compute_what_they_replace():
    """Reciprocal → Div(1, x), and a zero Pad of a static tensor → Concat with zeros: ONNX Runtime gives the
    same values before and after."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from hubedge.exporter.formats.onnx_mobile import mobile_friendly

    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64), "pads")
    graph = helper.make_graph(
        [helper.make_node("Reciprocal", ["x"], ["r"], name="reciprocal"),
         helper.make_node("Pad", ["r", "pads"], ["y"], name="pad", mode="constant")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7, 6])], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).uniform(0.5, 2.0, (1, 2, 3, 4)).astype(np.float32)

    def outputs(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = outputs(model)
    rewritten, counts = mobile_friendly(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts == {"reciprocal_to_div": 1, "zero_pad_to_concat": 1}
    assert {node.op_type for node in rewritten.graph.node} == {"Div", "Concat"}
    assert "pads" not in {tensor.name for tensor in rewritten.graph.initializer}  # read by nothing now: dropped
    np.testing.assert_array_equal(outputs(rewritten), before)
