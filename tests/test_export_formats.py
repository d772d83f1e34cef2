"""Every format × precision on tiny twins: exported, verified against the FP32 reference, described."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hubedge import runtimes
from hubedge.exporter.pipeline import verification_images
from hubedge.exporter.formats import FORMATS
from hubedge.runtimes.agreement import agreement_with_reference
from hubedge.runtimes.manifest import manifest_path, read_manifest
from hubedge.runtimes.errors import HubedgeError
from tests.helpers import cpu_has_bf16, export_all

PAIRS = [(name, precision) for name, fmt in FORMATS.items() for precision in fmt.precisions]


@pytest.fixture(scope="module")
def classifier_exports(tiny_exports):
    return tiny_exports


# the first test to ask for a pair waits for its export: qnn int8 is slow (over a minute: verified on the HTP
# simulator); under make test the tiny-exports unit has usually made them all before (test_bench.py)
@pytest.mark.parametrize("name, precision", PAIRS)
def test_every_format_and_precision_is_verified_and_runs_through_its_runtime(
        classifier_exports, tiny_classifier, name, precision):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 arithmetic (AVX512_BF16 or AMX): a bf16 artifact cannot be verified here")
    result = classifier_exports[(name, precision)]
    assert result.artifact.exists() and result.artifact.name == f"tiny-bit-ilsvrc.{name}.{precision}{FORMATS[name].suffix}"
    manifest = read_manifest(result.artifact)
    assert manifest["format"] == name and manifest["precision"] == precision
    assert manifest["verification"]["passed"] and "(132 images)" in manifest["verification"]["image_set"]
    assert manifest["export_peak_rss_mb"] > 0 and manifest["artifact"]["size_bytes"] == result.size_bytes
    # an independent check of the published file, not the temporary one verification saw
    images = verification_images(64)
    device = manifest["verification"]["device"]
    predictor = runtimes.load(result.artifact, device=device)
    figures = agreement_with_reference(tiny_classifier.reference().predict(images), predictor.predict(images),
                                       predictor.info)
    assert not FORMATS[name].floors[precision].failures(figures)
    if precision == "int8":
        assert manifest["quantization"]["calibration"]["samples"] == 64  # 29 photos + augmentations
    if precision == "fp32":
        assert figures["cosine_min"] > 0.99999
    if FORMATS[name].suffix == ".onnx":  # valid ONNX: verification ran the full checker, and so do we
        import onnx

        assert manifest["verification"]["onnx_checker"]["passed"]
        onnx.checker.check_model(str(result.artifact), full_check=True)
    if name == "ort":
        _check_ort_file(result.artifact, manifest)


def _check_ort_file(artifact, manifest) -> None:
    """An .ort file is ONNX Runtime's flatbuffer (file identifier ORTM), converted from ONNX that passed the full
    checker, with the operators a minimal build needs beside it, hashed in the manifest like any companion."""
    from hubedge.exporter.formats.ort import CONFIG_SUFFIX

    assert artifact.read_bytes()[4:8] == b"ORTM"
    assert manifest["quantization"]["onnx_checker_before_conversion"]["passed"]
    config = artifact.with_suffix(CONFIG_SUFFIX)
    assert config.name in manifest["artifact"]["companions"]
    entries = [line.split(";") for line in config.read_text().splitlines() if not line.startswith("#")]
    ops = {op for domain, opset, names in entries for op in names.split(",")}
    assert {"Conv", "MaxPool"} & ops or {"QLinearConv", "MaxPool"} <= ops, ops
    assert all(domain in ("ai.onnx", "com.microsoft") and opset.isdigit() for domain, opset, _ in entries)
    assert manifest["deployability"]["ort_mobile"]["checked"] is False  # the checker reads ONNX only: said so


def test_an_accuracy_searchs_trials_reuse_the_first_calibration_and_get_the_same_file(classifier_exports, tmp_path):
    """A trial quantized from the cached tensor ranges never reads the calibration images again, and its file is
    byte for byte the one a fresh calibration gives (qnn's route, with 16-bit activations as its search keeps)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    from hubedge.exporter.formats.onnx import CalibrationReader, fix_batch, quantize_static_config
    from hubedge.exporter.formats.qnn import graph_order_tensors

    model = fix_batch(onnx.load(str(classifier_exports[("onnx", "fp32")].artifact)), 1, 64, 1000)
    del model.metadata_props[:]
    source, ranges = tmp_path / "fixed.onnx", tmp_path / "ranges.json"
    onnx.save(model, str(source))
    images = verification_images(64)[:8]

    def config(a16: int):
        overrides = {tensor: [{"quant_type": QuantType.QUInt16}] for tensor in graph_order_tensors(source)[:a16]}
        return get_qnn_qdq_config(str(source), CalibrationReader(images), activation_type=QuantType.QUInt8,
                                  weight_type=QuantType.QInt8, per_channel=True, init_overrides=overrides or None)

    class Unread(CalibrationReader):
        def get_next(self):
            raise AssertionError("the calibration images were read again")

    quantize_static_config(source, tmp_path / "plain.onnx", config(0), ranges)  # calibrates, and writes the ranges
    assert ranges.is_file()
    trial = config(3)
    trial.calibration_data_reader = Unread(images)
    quantize_static_config(source, tmp_path / "trial.onnx", trial, ranges)
    quantize(str(source), str(tmp_path / "fresh.onnx"), config(3))
    assert (tmp_path / "trial.onnx").read_bytes() == (tmp_path / "fresh.onnx").read_bytes()


@pytest.mark.export
def test_a_runs_tflite_exports_convert_the_float_graph_once(tmp_path, monkeypatch):
    """fp32 and selective int8 both start from the converter's fp32 pass: a run makes it once per graph and head
    (softmax in the graph or not), and makes it again if its file is gone."""
    from types import SimpleNamespace

    from hubedge.exporter.formats import tflite
    from hubedge.exporter.options import Workspace

    conversions = []

    def converter(loaded, size, in_graph):
        conversions.append((size, in_graph))
        return SimpleNamespace(convert=lambda: f"float {size} {in_graph}".encode())

    monkeypatch.setattr(tflite, "_converter", converter)
    loaded = SimpleNamespace(export_savedmodel=tmp_path / "model", info=SimpleNamespace(name="m"))
    work = Workspace(calibration=lambda: None, scratch=tmp_path)
    assert tflite.fp32_conversion(loaded, 64, True, work, tmp_path / "unused") == b"float 64 True"
    assert tflite.fp32_conversion(loaded, 64, True, work, tmp_path / "unused") == b"float 64 True"
    assert tflite.fp32_conversion(loaded, 64, False, work, tmp_path / "unused") == b"float 64 False"
    assert conversions == [(64, True), (64, False)]
    for path in tmp_path.glob("m.64.*.fp32.tflite"):
        path.unlink()
    assert tflite.fp32_conversion(loaded, 64, True, work, tmp_path / "unused") == b"float 64 True"
    assert conversions == [(64, True), (64, False), (64, True)]


def test_an_int8_ort_file_computes_as_an_x86_cpu_without_vnni_what_it_computes_here(classifier_exports, tmp_path):
    """ONNX Runtime picks int8 kernels when it optimizes the graph, so the .ort file is optimized with the exact
    uint8 x uint8 setting: run as an x86 CPU without VNNI it gives this CPU's outputs. The control, the same ONNX
    graph saved without that setting (as ONNX Runtime's converter saves it), computes something else there:
    the saturating kernels, which no session option undoes once the graph is saved."""
    import shutil

    from hubedge.exporter.formats.ort import CONFIG_SUFFIX, SAVE_SETTINGS, save_optimized
    from hubedge.exporter.pipeline import evaluation_set
    from hubedge.runtimes.isolated import predict_isolated
    from tests.helpers import no_vnni_emulator

    emulator = no_vnni_emulator()
    artifact = classifier_exports[("ort", "int8")].artifact
    images = evaluation_set(64).images[:12]
    here = runtimes.load(artifact).predict(images)
    there, _, seen = predict_isolated(artifact, "cpu", images, emulator)
    assert seen["class"] == "x86-no-vnni" and np.abs(there - here).max() <= 1e-6

    control = tmp_path / artifact.name
    save_optimized(classifier_exports[("onnx", "int8")].artifact, control, SAVE_SETTINGS)
    shutil.copy(artifact.with_suffix(CONFIG_SUFFIX), control.with_suffix(CONFIG_SUFFIX))
    manifest = read_manifest(artifact)
    manifest["artifact"].update(sha256=hashlib.sha256(control.read_bytes()).hexdigest(),
                                size_bytes=control.stat().st_size)
    manifest_path(control).write_text(json.dumps(manifest))
    if emulator is not None:  # a VNNI CPU: the control is right here... (None: this CPU has no VNNI itself)
        assert np.abs(runtimes.load(control).predict(images) - here).max() <= 1e-6
    saturated, _, _ = predict_isolated(control, "cpu", images, emulator)
    assert np.abs(saturated - here).max() > 1e-3  # ...and not the same answers without VNNI


def test_the_full_onnx_checker_fails_the_fp16_graph_as_the_float16_tool_leaves_it(classifier_exports,
                                                                                  tiny_classifier, tmp_path):
    """The control for the check above: onnxruntime's float16 tool, unsorted, gives a graph ONNX Runtime loads
    but the full checker refuses; verification fails it, naming the check, whatever its agreement."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from hubedge.exporter.formats.onnx import full_check
    from hubedge.exporter.pipeline import evaluation_set, verify

    unsorted = tmp_path / "unsorted.onnx"
    fp32 = classifier_exports[("onnx", "fp32")].artifact
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(unsorted))
    record = full_check(unsorted)
    assert not record["passed"] and "topologically sorted" in record["message"] and "\n" not in record["message"]
    manifest = read_manifest(classifier_exports[("onnx", "fp16")].artifact)  # the runtime reads it beside the file
    manifest["artifact"].update(file=unsorted.name, sha256=hashlib.sha256(unsorted.read_bytes()).hexdigest(),
                                size_bytes=unsorted.stat().st_size)
    manifest_path(unsorted).write_text(json.dumps(manifest))
    images = evaluation_set(tiny_classifier.info.input_size)
    verification = verify(unsorted, FORMATS["onnx"], "fp16", tiny_classifier.reference().predict(images.images),
                          images, tiny_classifier.info, FORMATS["onnx"].floors["fp16"])
    assert not verification["passed"] and not verification["shortfalls"]  # it agrees; it is not valid ONNX
    assert verification["failures"][0].startswith("not valid ONNX (Nodes in a graph must be topologically sorted")


def test_quantized_artifacts_are_smaller(classifier_exports):
    for name in ("tflite", "onnx", "openvino"):
        fp32 = classifier_exports[(name, "fp32")].size_bytes
        assert classifier_exports[(name, "fp16")].size_bytes < 0.6 * fp32
        assert classifier_exports[(name, "int8")].size_bytes < 0.35 * fp32
    assert classifier_exports[("ort", "int8")].size_bytes < 0.35 * classifier_exports[("ort", "fp32")].size_bytes


def test_labels_and_preprocessing_travel_in_each_formats_own_metadata(classifier_exports):
    import onnx
    import openvino as ov

    import zipfile

    from hubedge.exporter.formats.tflite import read_metadata

    artifact = classifier_exports[("tflite", "int8")].artifact
    tflite = read_metadata(artifact)
    assert "hubedge.labels" not in tflite  # the labels travel once, as the standard metadata's associated files
    with zipfile.ZipFile(artifact) as packed:  # TFLite Metadata zips them after the flatbuffer
        assert packed.read("labels_en.txt").decode().splitlines()[281].startswith("tabby")
        assert packed.read("labels.txt").decode().splitlines()[281] == "n02123045"
    model_record = json.loads(tflite["hubedge.model"])
    assert model_record["precision"] == "int8" and model_record["activation_in_graph"] is True

    props = {p.key: p.value for p in onnx.load(str(classifier_exports[("onnx", "int8")].artifact)).metadata_props}
    assert props["hubedge.labels"].splitlines()[281].startswith("tabby")
    assert json.loads(props["hubedge.model"])["activation"] == "softmax"
    model = ov.Core().read_model(str(classifier_exports[("openvino", "fp32")].artifact))
    assert model.get_rt_info(["hubedge", "labels"]).astype(str).splitlines()[281].startswith("tabby")
    assert "resize to 64" in model.get_rt_info(["hubedge", "preprocessing"]).astype(str)


# slow (about a minute): the feature twin's first use on its worker builds it, and three int8 exports each verify
# their own quantization of it (tf2onnx in a child process among them)
def test_feature_vector_exports_keep_their_embeddings(tiny_features, tmp_path):
    pairs = [("tflite", "int8"), ("onnx", "int8"), ("openvino", "int8")]
    for result in export_all(tiny_features, tmp_path, pairs).values():
        verification = result.verification
        assert verification["passed"] and "top1" not in verification and verification["cosine_min"] > 0.9


def test_the_tflite_converter_saves_the_captured_variables_only_and_writes_the_same_file(tiny_classifier,
                                                                                           tiny_exports, tmp_path,
                                                                                           monkeypatch):
    """The converter saves what it is given and loads it back, for the serving signature: the traced function's
    variables give the file the whole hub module gives, byte for byte and a third of the time; a function that
    captures anything else keeps the module. Every exported file has the signature (the export refuses one without)."""
    import tensorflow as tf

    from hubedge.exporter.formats import tflite

    converter = tflite._converter(tiny_classifier, 64, True)
    assert converter._trackable_obj is not tiny_classifier.export_module()
    assert len(converter._trackable_obj.variables) == len(tiny_classifier.export_module().variables)
    whole = tf.lite.TFLiteConverter.from_concrete_functions(converter._funcs, tiny_classifier.export_module())
    assert converter.convert() == whole.convert()
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer([1], [2.0]), 0.0)
    captures_more = tf.function(lambda x: x * table.lookup(tf.constant(1)), input_signature=[tf.TensorSpec([1])])
    module = tf.Module()
    assert tflite._holder(module, captures_more.get_concrete_function()) is module
    for precision in ("fp32", "int8"):
        assert tflite.has_serving_signature(tiny_exports[("tflite", precision)].artifact.read_bytes()), precision
    assert not tflite.has_serving_signature(tf.lite.TFLiteConverter.from_concrete_functions(converter._funcs).convert())
    from hubedge.exporter.options import ExportOptions, Workspace

    monkeypatch.setattr(tflite, "_holder", lambda module, concrete: None)  # nothing to save: no signature
    with pytest.raises(HubedgeError, match="without its serving_default signature"):
        tflite.export(tiny_classifier, "fp32", tmp_path / "m.tflite", ExportOptions(),
                      Workspace(calibration=lambda: None, scratch=tmp_path))
    assert not (tmp_path / "m.tflite").exists()


def test_tflite_int8_io_dequantizes_exactly_as_by_hand(tiny_classifier, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    (result,) = export_all(tiny_classifier, tmp_path, [("tflite", "int8")], int8_io="int8").values()
    manifest = read_manifest(result.artifact)
    in_q, out_q = manifest["input"]["quantization"], manifest["output"]["quantization"]
    assert in_q["dtype"] == out_q["dtype"] == "int8" and manifest["quantization"]["io"] == "int8"
    assert manifest["model"]["activation_in_graph"] is False  # integer logits: no softmax in an int8-I/O graph
    image = verification_images(64)[:1]
    interpreter = Interpreter(model_path=str(result.artifact))
    interpreter.allocate_tensors()
    q = np.clip(np.round(image / in_q["scale"]) + in_q["zero_point"], -128, 127).astype(np.int8)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], q)
    interpreter.invoke()
    raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    by_hand = (raw.astype(np.float32) - out_q["zero_point"]) * out_q["scale"]
    np.testing.assert_array_equal(runtimes.load(result.artifact).predict(image), by_hand)


def _xnnpack_partitions(path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def test_tflite_int8_keeps_the_graph_in_one_xnnpack_partition(tiny_exports, tiny_classifier, tmp_path):
    """Normalization ops XNNPACK cannot run in int8 stay float; quantizing every op splits the graph."""
    from hubedge.exporter.options import ExportOptions
    from hubedge.exporter.pipeline import export_one
    from hubedge.exporter.formats import FORMATS

    xnnpack = tiny_exports[("tflite", "int8")]
    recipe = read_manifest(xnnpack.artifact)["quantization"]
    # the softmax of a softmax head is in the graph (for mobile SDKs), kept float too
    assert recipe["float_ops"][:3] == ["SQUARED_DIFFERENCE", "RSQRT", "SOFTMAX"] and "13 nodes" in recipe["float_ops"][3]
    # each GroupNorm's statistics and (x - mean) * scale (exporter.formats.tflite): 12 ops in each of 10, 4 in each
    # of the 3 whose groups are single channels (the converter folds their group averages away)
    assert recipe["float_ops"][4] == "normalization statistics and (x - mean) * scale (132 nodes)"
    # the every-op recipe is a comparison, not a verified default: its partitions are what is under test
    full = export_one(tiny_classifier, FORMATS["tflite"], "int8", tmp_path, False, None,
                      ExportOptions(tflite_int8_recipe="full"))
    assert _xnnpack_partitions(xnnpack.artifact) == 1 and _xnnpack_partitions(full.artifact) > 10
    assert "float_ops" not in read_manifest(full.artifact)["quantization"]


@pytest.mark.export
def test_the_tf2onnx_child_collects_garbage_before_each_onnx_optimizer(monkeypatch):
    import gc

    from tf2onnx import optimizer

    from hubedge.exporter.formats import tf2onnx_child

    names = list(optimizer._get_optimizers())
    monkeypatch.setattr(optimizer, "_get_optimizers", optimizer._get_optimizers)  # undone after the test
    assert tf2onnx_child.collect_between_optimizers()  # the pinned tf2onnx still has the hook
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or 0)
    table = optimizer._get_optimizers()
    assert list(table) == names
    table[names[0]]()
    assert collections == [1]


@pytest.mark.parametrize("switch, route_flag", [(None, False), ("0", False), ("1", True)])
def test_the_onnx_format_converts_in_the_child_by_the_route_the_switch_names(monkeypatch, tmp_path, switch,
                                                                            route_flag):
    import subprocess

    from hubedge.exporter.formats import onnx as onnx_format

    commands = []

    def refuse(command, **kwargs):
        commands.append(command)
        raise OSError("stop here")

    if switch is None:
        monkeypatch.delenv(onnx_format.WEIGHTS_IN_GRAPH_SWITCH, raising=False)
    else:
        monkeypatch.setenv(onnx_format.WEIGHTS_IN_GRAPH_SWITCH, switch)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    with pytest.raises(OSError):
        onnx_format._run_tf2onnx(tmp_path / "model", tmp_path / "out.onnx", 64, 12345)
    assert commands[0][1:3] == ["-m", "hubedge.exporter.formats.tf2onnx_child"]
    assert commands[0][commands[0].index("--external-data-above") + 1] == "12345"
    assert ("--weights-in-graph" in commands[0]) is route_flag
    assert ("command line" in onnx_format.conversion_method()) is route_flag


def test_a_tf2onnx_child_killed_for_memory_is_named_so(monkeypatch, tmp_path):
    """The kernel's OOM killer ends the child with SIGKILL; its log's last line is then whatever it printed last
    (a CUDA stub's notice, on a 2 GB BiT), so the error names the signal and its likely cause instead."""
    import signal
    import subprocess

    from hubedge.exporter.formats import onnx as onnx_format

    class Killed:
        returncode = -signal.SIGKILL

        def __init__(self, command, stdout, **kwargs):
            stdout.write("I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")

        def wait(self):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", Killed)
    with pytest.raises(HubedgeError, match=r"killed by SIGKILL \(most likely the kernel's out-of-memory killer"):
        onnx_format._run_tf2onnx(tmp_path / "model", tmp_path / "out.onnx", 224, 1 << 30)


@pytest.mark.export
def test_weights_leave_the_tensorflow_graph_as_placeholders_and_small_constants_stay():
    import tensorflow as tf

    from hubedge.exporter.formats import tf2onnx_child

    kernel = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)  # 36864 values

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 64], tf.float32)])
    def small(x):
        return tf.nn.conv2d(x, tf.constant(kernel), 1, "SAME") * tf.constant(0.5) + tf.constant(np.ones(64, np.float32))

    graph_def = small.get_concrete_function().graph.as_graph_def()
    weights = tf2onnx_child.take_out_weights(graph_def)
    assert len(weights) == 1 and np.array_equal(next(iter(weights.values())), kernel)
    nodes = {f"{node.name}:0": node for node in graph_def.node}
    placeholder = nodes[next(iter(weights))]
    assert placeholder.op == "Placeholder" and [d.size for d in placeholder.attr["shape"].shape.dim] == [3, 3, 64, 64]
    assert sum(node.op == "Const" for node in graph_def.node) >= 2  # 0.5 and the 64 ones stay constants


def test_the_converted_graph_holds_its_weights_as_initializers_with_weight_standardization_folded(tiny_exports):
    import onnx

    model = onnx.load(str(tiny_exports[("onnx", "fp32")].artifact))
    assert [value.name for value in model.graph.input] == ["images"]
    assert [value.name for value in model.graph.output] == ["outputs"]
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    initializers = {tensor.name for tensor in model.graph.initializer}
    assert convs and all(node.input[1] in initializers for node in convs)  # folded, not computed at run time
    assert {opset.domain for opset in model.opset_import} == {""}
    recipe = read_manifest(tiny_exports[("onnx", "fp32")].artifact)["quantization"]
    assert recipe["method"].startswith("written from the weights of a BiT")  # tf2onnx's route: tests/test_bit_writer

