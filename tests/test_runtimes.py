"""The runtime adapters behind one predict(): devices, input checks, damaged files, the NPU path."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hubedge import runtimes
from hubedge.cli import main
from hubedge.exporter.pipeline import verification_images
from tests.helpers import cpu_has_bf16
from hubedge.runtimes.agreement import summarize
from hubedge.runtimes.devices import DEVICES, DeviceUnavailableError, discover, status
from hubedge.runtimes.errors import CorruptModelError, HubedgeError, InvalidInputError

CPU_ARTIFACTS = [("savedmodel", "fp32"), ("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"),
                 ("openvino", "fp32")]


def test_discovery_names_every_runtime_and_device_with_a_reason_when_absent(capsys):
    rows = discover()
    assert {(r.runtime, r.device) for r in rows} == {
        (rt, d) for rt in ("tf", "litert", "onnxruntime", "openvino") for d in DEVICES}
    assert all(r.available or r.reason for r in rows)
    assert all(r.available for r in rows if r.device == "cpu" and r.runtime != "tf")
    tf_cpu = next(r for r in rows if (r.runtime, r.device) == ("tf", "cpu"))  # absent on a runtimes-only install
    assert tf_cpu.available == (os.environ.get("HUBEDGE_TEST_WITHOUT_EXPORT") != "1"), tf_cpu.reason
    assert main(["devices", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [r.as_dict() for r in rows]


@pytest.mark.parametrize("name, precision", CPU_ARTIFACTS)
def test_missing_devices_are_refused_with_their_reason(tiny_exports, name, precision):
    artifact = tiny_exports[(name, precision)].artifact
    runtime = runtimes.read_manifest(artifact)["runtime"]
    for device in ("gpu", "npu"):
        if status(runtime, device).available:
            continue
        with pytest.raises(DeviceUnavailableError, match=f"{runtime} on {device}: not available here: "):
            runtimes.load(artifact, device=device)


@pytest.mark.parametrize("name, precision", CPU_ARTIFACTS)
def test_every_input_kind_gives_the_same_outputs(tiny_exports, photos, name, precision):
    threads = None if name == "savedmodel" else 1  # TF fixes its thread pools once per process
    predictor = runtimes.load(tiny_exports[(name, precision)].artifact, threads=threads)
    from_paths = predictor.predict(photos[:2])
    assert from_paths.shape == (2, 1000) and from_paths.dtype == np.float32
    batch = runtimes.preprocess(photos[:2], predictor.input_size)
    np.testing.assert_array_equal(predictor.predict(batch), from_paths)
    uint8 = [np.asarray(runtimes.load_image(p)) for p in photos[:2]]
    np.testing.assert_array_equal(predictor.predict(uint8), from_paths)
    best = predictor.top_k(photos[:1], k=3)[0]
    assert len(best) == 3 and best[0].score >= best[1].score >= best[2].score and best[0].label


@pytest.mark.parametrize("name, precision", CPU_ARTIFACTS)
def test_the_direct_call_is_the_same_computation_as_predict(tiny_exports, name, precision):
    """What benchmarks time as 'the runtime alone' must compute what predict() computes."""
    predictor = runtimes.load(tiny_exports[(name, precision)].artifact)
    image = verification_images(64)[:1]
    direct = np.asarray(predictor.direct_call(image)()).reshape(1, -1)
    np.testing.assert_array_equal(direct, predictor.predict(image))


@pytest.mark.parametrize("name, precision", CPU_ARTIFACTS)
@pytest.mark.parametrize("bad, message", [
    (np.zeros((64, 64, 3), np.float32), "rank 4"),
    (np.zeros((1, 64, 64, 1), np.float32), "3 channels"),
    (np.zeros((1, 64, 64, 3), np.float16), "float32"),
    (np.full((1, 64, 64, 3), np.nan, np.float32), "NaN"),
    (np.full((1, 64, 64, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.zeros((0, 64, 64, 3), np.float32), "empty"),
])
def test_bad_batches_get_one_clear_error_on_every_runtime(tiny_exports, name, precision, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        runtimes.load(tiny_exports[(name, precision)].artifact).predict(bad)


def test_fixed_size_artifacts_refuse_other_sizes_of_float_input(tiny_exports):
    with pytest.raises(InvalidInputError, match="takes 64x64 images"):
        runtimes.load(tiny_exports[("tflite", "fp32")].artifact).predict(np.zeros((1, 32, 32, 3), np.float32))


@pytest.fixture(scope="module")
def litert_fp32(tiny_exports):
    return runtimes.load(tiny_exports[("tflite", "fp32")].artifact)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=hnp.arrays(dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int16]),
                        shape=hnp.array_shapes(min_dims=2, max_dims=5, min_side=0, max_side=70)))
def test_predict_on_any_array_gives_outputs_or_an_invalid_input_error(litert_fp32, array):
    try:
        outputs = litert_fp32.predict(array)
    except InvalidInputError:
        return
    assert outputs.dtype == np.float32 and outputs.ndim == 2 and outputs.shape[1] == 1000
    assert np.isfinite(outputs).all()


@pytest.mark.parametrize("name, precision", [("tflite", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")])
def test_truncated_artifacts_are_reported_as_damaged(tiny_exports, tmp_path, name, precision):
    source = tiny_exports[(name, precision)].artifact
    target = tmp_path / source.name
    shutil.copy(source, target)
    shutil.copy(runtimes.manifest.manifest_path(source), runtimes.manifest.manifest_path(target))
    if name == "openvino":
        shutil.copy(source.with_suffix(".bin"), target.with_suffix(".bin"))
        target = target.with_suffix(".bin")  # the weights file, truncated
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="is not the file its manifest describes"):  # before any runtime
        runtimes.load(tmp_path / source.name)
    with pytest.raises(CorruptModelError, match="cannot load"):  # and the runtime's own refusal, unchecked
        runtimes.load(tmp_path / source.name, check_sha256=False).predict(np.zeros((1, 64, 64, 3), np.float32))


OPENVINO_ARM_V8_0 = ("Exception from src/inference/src/cpp/core.cpp:117:\n"
                     "Exception from src/plugins/intel_cpu/src/node.cpp:1005:\n"
                     "[CPU] Convolution node with name 'Multiply_212841' object is not initialized\n")


def test_an_intact_artifact_openvino_cannot_compile_here_is_not_called_corrupt(tiny_exports, monkeypatch):
    """As OpenVINO int8 on an ARMv8.0 core without dot-product (issue #37): read, but refused at compile. The error
    names the cause (not OpenVINO's source locations) and the CPU class, on one line."""
    import types

    import openvino

    from hubedge.runtimes import openvino_runtime
    from hubedge.runtimes.cpu import cpu_class
    from hubedge.runtimes.errors import CannotCompileError

    class CoreThatCannotCompile(openvino.Core):
        def compile_model(self, *args, **kwargs):
            raise RuntimeError(OPENVINO_ARM_V8_0)

    fake = types.SimpleNamespace(**{**vars(openvino), "Core": CoreThatCannotCompile})
    monkeypatch.setattr(openvino_runtime, "import_runtime", lambda *names: fake)
    with pytest.raises(CannotCompileError) as error:
        runtimes.load(tiny_exports[("openvino", "int8")].artifact)
    message = str(error.value)
    assert "Convolution node with name 'Multiply_212841' object is not initialized" in message
    assert f"this CPU ({cpu_class()})" in message and "core.cpp" not in message and "\n" not in message
    assert not isinstance(error.value, CorruptModelError)


def test_a_missing_manifest_or_artifact_is_a_clear_error(tiny_exports, tmp_path):
    source = tiny_exports[("tflite", "fp32")].artifact
    shutil.copy(source, tmp_path / source.name)
    with pytest.raises(HubedgeError, match="has no manifest"):
        runtimes.load(tmp_path / source.name)
    with pytest.raises(HubedgeError, match="artifact not found"):
        runtimes.load(tmp_path / "nothing.tflite.fp32.tflite")


NPU = status("onnxruntime", "npu")


@pytest.mark.skipif(not NPU.available, reason=f"QNN HTP path: {NPU.reason}")
def test_qnn_artifact_runs_wholly_on_the_htp_simulator_and_agrees_with_fp32(tiny_exports, tiny_classifier):
    result = tiny_exports[("qnn", "int8")]
    assert result.verification["device"] == "npu" and "simulator" in result.verification["device_note"]
    predictor = runtimes.load(result.artifact, device="npu", strict=True)
    assert predictor.device_status.backend.startswith("QNNExecutionProvider")
    images = verification_images(64)
    figures = summarize(tiny_classifier.reference().predict(images), predictor.predict(images), "classification")
    assert figures["cosine_min"] > 0.9
    profiled = runtimes.load(result.artifact, device="npu")
    assert profiled.placement.get("QNNExecutionProvider") == 1 and profiled.cpu_fallback == []


@pytest.mark.skipif(not NPU.available, reason=f"QNN HTP path: {NPU.reason}")
def test_a_cpu_int8_artifact_is_refused_by_the_npu_with_the_way_out(tiny_exports, tmp_path, monkeypatch):
    """...and the profile ONNX Runtime writes for the placement report when the session goes is not left behind
    in the temp directory."""
    import tempfile

    cpu_int8, qnn_int8 = (tiny_exports[(name, "int8")].artifact for name in ("onnx", "qnn"))  # exported first
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(HubedgeError, match="export --format qnn"):
        runtimes.load(cpu_int8, device="npu")
    runtimes.load(qnn_int8, device="npu")  # profiled: it reads its placement
    assert list(tmp_path.iterdir()) == []


def test_a_quantized_onnx_graph_gets_the_faster_cpu_layout_once_and_both_compute_the_model(
        tiny_exports, photos, tmp_path, monkeypatch):
    from hubedge.runtimes import onnx_runtime

    artifact = tiny_exports[("onnx", "int8")].artifact
    outputs = {}
    for gain, layout in ((-1.0, "nchw"), (2.0, "default")):  # forced: the alternative always / never wins
        monkeypatch.setenv("HUBEDGE_CACHE_DIR", str(tmp_path / layout))
        monkeypatch.setattr(onnx_runtime, "LAYOUT_MIN_GAIN", gain)
        first = runtimes.load(artifact, threads=1)
        assert first.cpu_layout["layout"] == layout and set(first.cpu_layout["trial_ms"]) == {"default", "nchw"}
        assert first.cpu_layout.get("disabled_optimizers", []) == (["NhwcTransformer"] if layout == "nchw" else [])
        again = runtimes.load(artifact, threads=1)  # from the cache, with the record of the choice
        assert again.optimized_cache == first.optimized_cache and again.cpu_layout == first.cpu_layout
        outputs[layout] = first.predict(photos[:3])
        np.testing.assert_array_equal(outputs[layout], again.predict(photos[:3]))
    # the layouts differ in integer kernels only, so they agree far above the int8 floor
    assert summarize(outputs["default"], outputs["nchw"], "classification")["cosine_min"] > 0.999


def test_a_float_onnx_graph_has_no_layout_trial_and_the_trial_can_be_switched_off(tiny_exports, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("HUBEDGE_CACHE_DIR", str(tmp_path))
    assert runtimes.load(tiny_exports[("onnx", "fp32")].artifact).cpu_layout == {"layout": "default"}
    monkeypatch.setenv("HUBEDGE_ORT_LAYOUT_TRIAL", "0")
    untried = runtimes.load(tiny_exports[("onnx", "int8")].artifact)
    assert untried.cpu_layout == {"layout": "default"} and "default-layout" in untried.optimized_cache


def test_onnx_runtime_caches_the_cpu_optimized_graph(tiny_exports, photos):
    artifact = tiny_exports[("onnx", "fp32")].artifact
    first = runtimes.load(artifact)
    second = runtimes.load(artifact)
    assert second.optimized_cache is not None and "ort-optimized" in second.optimized_cache
    np.testing.assert_array_equal(first.predict(photos[:2]), second.predict(photos[:2]))


def test_a_bf16_openvino_artifact_computes_in_bf16_and_an_fp32_one_never_does(tiny_exports, photos):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 arithmetic (AVX512_BF16 or AMX)")
    bf16 = runtimes.load(tiny_exports[("openvino", "bf16")].artifact)
    fp32 = runtimes.load(tiny_exports[("openvino", "fp32")].artifact)
    assert (bf16.inference_precision, fp32.inference_precision) == ("bf16", "f32")
    figures = summarize(fp32.predict(photos), bf16.predict(photos), "classification")
    # really bf16 (8 significant bits), not the fp32 result relabelled; still far above the floor
    assert figures["max_abs_diff"] > 1e-4 and figures["cosine_min"] > 0.995


def test_a_bf16_artifact_is_refused_where_openvino_would_quietly_run_f32(tiny_exports, monkeypatch):
    from hubedge.runtimes import openvino_runtime

    if ("openvino", "bf16") not in tiny_exports:
        pytest.skip("this CPU has no bf16 arithmetic, so no bf16 artifact was exported")
    monkeypatch.setattr(openvino_runtime, "cpu_has_bf16", lambda core: False)
    with pytest.raises(DeviceUnavailableError, match="no bf16 arithmetic.*fp32 artifact"):
        runtimes.load(tiny_exports[("openvino", "bf16")].artifact)

    class Bf16Model:
        def has_rt_info(self, path):
            return True

        def get_rt_info(self, path):
            return type("Any", (), {"astype": lambda self, kind: "bf16"})()

    with pytest.raises(DeviceUnavailableError, match="CPU only; use the fp16 artifact on the gpu"):
        openvino_runtime._inference_precision(None, Bf16Model(), "gpu", "m.xml")


def test_openvino_runs_one_image_on_a_static_batch_1_model_and_batches_on_the_dynamic_one(tiny_exports, photos):
    predictor = runtimes.load(tiny_exports[("openvino", "fp32")].artifact)
    assert list(predictor._compiled.input(0).get_partial_shape().to_shape())[0] == 1
    singles = np.concatenate([predictor.predict(photos[i : i + 1]) for i in range(3)])
    assert predictor._batched is None  # nothing compiled for batches until one comes
    batched = predictor.predict(photos[:3])
    assert predictor._batched is not None
    np.testing.assert_allclose(batched, singles, rtol=1e-4, atol=1e-5)


def test_openvino_static_batch_can_be_switched_off_for_comparison(tiny_exports, monkeypatch):
    monkeypatch.setenv("HUBEDGE_OV_STATIC_BATCH", "0")
    predictor = runtimes.load(tiny_exports[("openvino", "fp32")].artifact)
    assert predictor._compiled.input(0).get_partial_shape()[0].is_dynamic
