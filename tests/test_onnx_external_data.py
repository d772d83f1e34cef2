"""ONNX files past protobuf's 2 GiB limit keep their weights in a data file beside the graph (ONNX external data).

A BiT R101x3 or R152x4 takes that path by its size; here the threshold (``onnx_external_data_above``) is lowered
to 0 so that a tiny twin takes it: the same code writes, verifies, checks, publishes and loads the pair.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from hubedge import runtimes
from hubedge.exporter.formats import onnx_storage
from hubedge.exporter.fsutil import atomic_path
from hubedge.cli import main
from hubedge.runtimes.errors import CorruptModelError
from hubedge.runtimes.integrity import check_artifact, sha256_of


def _small_model() -> onnx.ModelProto:
    """y = x·W1·W2 + b, with weights of several sizes (one under the external-data size floor)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 300)), ("w2", (300, 7)), ("b", (7,)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _locations(path: Path) -> set[str]:
    """The files the ONNX file ``path`` keeps tensors in, read from the graph alone."""
    return {info.location for info in _external(path)}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _external(path: Path) -> list[ExternalDataInfo]:
    model = onnx.load(str(path), load_external_data=False)
    return [ExternalDataInfo(tensor) for tensor in model.graph.initializer if uses_external_data(tensor)]


def test_weights_past_the_threshold_go_to_an_aligned_data_file_that_onnx_runtime_reads(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    inline = tmp_path / "inline.onnx"
    assert onnx_storage.save(_small_model(), inline, onnx_storage.weights_bytes(_small_model()) + 1) is None
    assert not onnx_storage.data_file(inline).exists() and not _external(inline)

    stored = tmp_path / "m.onnx.fp32.onnx"
    data = onnx_storage.save(_small_model(), stored, 0)
    assert data == tmp_path / "m.onnx.fp32.onnx.data" and data.is_file()
    infos = _external(stored)
    assert {info.location for info in infos} == {data.name} == _locations(stored)
    assert len(infos) == 2  # w1 and w2; b (28 bytes) stays in the graph
    assert all(info.offset % onnx_storage.ALIGNMENT == 0 for info in infos)
    assert data.stat().st_mode & 0o777 == stored.stat().st_mode & 0o777  # shipped as readable as the graph
    np.testing.assert_array_equal(_run(stored, x), _run(inline, x))
    onnx.checker.check_model(str(stored), full_check=True)

    onnx_storage.save(_small_model(), stored, 10**9)  # saved again under the threshold: no stale data file
    assert not data.exists() and not _external(stored)


def test_a_model_with_a_data_file_moves_with_it(tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    source = tmp_path / "model.int8.onnx"
    onnx_storage.save(_small_model(), source, 0)
    expected = _run(source, x)
    target = tmp_path / "model.int8.plain.onnx"
    onnx_storage.move(source, target)
    assert not source.exists() and not onnx_storage.data_file(source).exists()
    assert _locations(target) == {"model.int8.plain.onnx.data"}
    np.testing.assert_array_equal(_run(target, x), expected)
    onnx_storage.remove(target)
    assert not target.exists() and not onnx_storage.data_file(target).exists()


def test_atomic_publishing_moves_a_written_data_file_and_removes_a_stale_one(tmp_path):
    final = tmp_path / "m.onnx.fp32.onnx"
    with atomic_path(final, optional=(".onnx.data",)) as temp:
        onnx_storage.save(_small_model(), temp, 0)
    assert onnx_storage.data_file(final).is_file() and _locations(final) == {"m.onnx.fp32.onnx.data"}
    with atomic_path(final, optional=(".onnx.data",)) as temp:  # re-exported below the threshold
        onnx_storage.save(_small_model(), temp, 10**9)
    assert final.is_file() and not onnx_storage.data_file(final).exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [final.name]


def test_the_integrity_check_covers_a_data_file_beside_an_onnx_artifact(tmp_path):
    artifact = tmp_path / "m.onnx.fp32.onnx"
    data = onnx_storage.save(_small_model(), artifact, 0)
    manifest = {"artifact": {"sha256": sha256_of(artifact), "companions": {data.name: sha256_of(data)}}}
    check_artifact(artifact, manifest)
    with pytest.raises(CorruptModelError, match=f"records no sha256 for {data.name}"):
        check_artifact(artifact, {"artifact": {"sha256": sha256_of(artifact), "companions": {}}})
    data.write_bytes(data.read_bytes()[:-4] + b"\1\2\3\4")
    with pytest.raises(CorruptModelError, match=f"{data.name} is not the file its manifest describes"):
        check_artifact(artifact, manifest)


def test_the_threshold_is_refused_where_no_format_takes_it_and_out_of_range(capsys, tmp_path):
    from hubedge.exporter.options import ONNX_EXTERNAL_DATA_ABOVE, ExportOptions
    from hubedge.runtimes.errors import InvalidInputError

    code = main(["export", "--model", "bit-m-r50x1-in21k", "--weights", "seeded", "--format", "tflite",
                 "--onnx-external-data-above", "0", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("(--onnx-external-data-above) applies to onnx fp32, onnx fp16, onnx int8, "
                                          "qnn int8 exports only; none was asked for")
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["export", "--model", "x", "--format", "onnx", "--onnx-external-data-above", "lots"])
    with pytest.raises(InvalidInputError, match="from 0 .* to 1879048192"):
        ExportOptions(onnx_external_data_above=ONNX_EXTERNAL_DATA_ABOVE + 1)


def test_a_tiny_twin_exports_verifies_and_loads_with_its_weights_beside_the_graph(tiny_classifier, tmp_path,
                                                                                   photos):
    """onnx at every precision, through the tf2onnx child's external-data route, the ONNX checker, verification on
    the 132 images, publishing and the manifest; then loaded, run, and refused once tampered. qnn int8 writes its
    intermediate and final files the same way; its quantization and verification on the HTP simulator are
    tested in test_export_formats, so here it is exported unverified and run on the CPU."""
    from hubedge.exporter import ExportOptions, export

    options = ExportOptions(onnx_external_data_above=0)
    results = [*export(tiny_classifier, formats="onnx", precisions="fp32,fp16,int8", output=tmp_path, options=options),
               *export(tiny_classifier, formats="qnn", precisions="int8", output=tmp_path, options=options,
                       verify=False)]
    assert len(results) == 4
    for result in results:
        artifact = result.artifact
        data = onnx_storage.data_file(artifact)
        if result.format == "onnx":
            assert result.verification["passed"] and result.verification["onnx_checker"]["passed"], artifact.name
        assert _locations(artifact) == {data.name}
        manifest = json.loads(artifact.with_suffix(".json").read_text())
        assert manifest["artifact"]["companions"] == {data.name: sha256_of(data)}
        assert manifest["artifact"]["size_bytes"] == artifact.stat().st_size + data.stat().st_size
        assert manifest["quantization"]["external_data"]["file"] == data.name
        assert all(info.offset % onnx_storage.ALIGNMENT == 0 for info in _external(artifact))
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".hubedge")]

    fp32 = results[0].artifact
    for artifact in (fp32, results[3].artifact):
        scores = runtimes.load(artifact, device="cpu").predict(photos[:2])
        assert scores.shape == (2, 1000) and np.isfinite(scores).all()

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in (fp32, fp32.with_suffix(".json"), onnx_storage.data_file(fp32)):
        shutil.copy(path, copy / path.name)
    tampered = onnx_storage.data_file(copy / fp32.name)
    tampered.write_bytes(tampered.read_bytes()[:-4] + b"\1\2\3\4")
    with pytest.raises(CorruptModelError, match=f"{tampered.name} is not the file its manifest describes"):
        runtimes.load(copy / fp32.name)
    tampered.unlink()
    with pytest.raises(CorruptModelError, match=f"{tampered.name} is missing"):
        runtimes.load(copy / fp32.name)


def _model_for_fp16(blocked: bool) -> onnx.ModelProto:
    """The small model with values fp16 cannot hold in its first weight (the tool clamps them) and, with
    ``blocked``, a large weight read by an op the float16 tool keeps float32 (Max)."""
    model = _small_model()
    w1 = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w1[0, :4] = (1e6, -1e6, 1e-9, -1e-9)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    if blocked:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((2, 300), np.float32), "floor"))
        model.graph.node.insert(1, helper.make_node("Max", ["h0", "floor"], ["h"]))
        model.graph.node[0].output[0] = "h0"
    return model


def test_fp16_of_a_file_with_a_data_file_is_cast_one_weight_at_a_time_into_the_model_the_tool_makes(tmp_path):
    """The streamed route (graph loaded without its weights) against onnxruntime's float16 tool on the whole model
    in memory: the same nodes, types and shapes, and the same fp16 bytes in every weight, the clamped ones too."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from hubedge.exporter.formats import onnx_fp16

    fp32 = tmp_path / "m.onnx.fp32.onnx"
    onnx_storage.save(_model_for_fp16(blocked=False), fp32, 0)
    target = tmp_path / "m.onnx.fp16.onnx"
    streamed = onnx_fp16.convert(fp32, onnx_storage.data_file(target))
    assert {info.location for info in map(ExternalDataInfo, streamed.graph.initializer)
            if info.location} == {onnx_storage.data_file(target).name}
    assert onnx_storage.weights_bytes(streamed) < 1024  # the large weights are not held in the model
    onnx_storage.save(streamed, target, 0)
    whole = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    assert np.array_equal(_run(target, x), ort.InferenceSession(whole.SerializeToString()).run(None, {"x": x})[0])
    written = onnx.load(str(target))
    assert [tensor.name for tensor in written.graph.initializer] == [tensor.name for tensor in whole.graph.initializer]
    for mine, tools in zip(written.graph.initializer, whole.graph.initializer):
        assert mine.data_type == tools.data_type == TensorProto.FLOAT16, mine.name
        assert numpy_helper.to_array(mine).tobytes() == numpy_helper.to_array(tools).tobytes(), mine.name
    del written.graph.initializer[:], whole.graph.initializer[:]
    assert written.graph == whole.graph
    # below the threshold, a streamed model takes its weights back into the one file
    single = tmp_path / "single.onnx"
    assert onnx_storage.save(onnx_fp16.convert(fp32, onnx_storage.data_file(single)), single, 2**40) is None
    assert not onnx_storage.data_file(single).exists() and not _external(single)
    assert np.array_equal(_run(single, x), _run(target, x))


def test_fp16_refuses_to_stream_a_large_weight_the_tool_would_keep_float32(tmp_path):
    from hubedge.exporter.formats import onnx_fp16
    from hubedge.runtimes.errors import HubedgeError

    fp32 = tmp_path / "m.onnx.fp32.onnx"
    onnx_storage.save(_model_for_fp16(blocked=True), fp32, 0)
    with pytest.raises(HubedgeError, match=r"would keep 1 large float32 weight\(s\) of this ONNX graph \(floor\)"):
        onnx_fp16.convert(fp32, onnx_storage.data_file(tmp_path / "m.onnx.fp16.onnx"))
    inline = tmp_path / "inline.onnx"
    onnx_storage.save(_model_for_fp16(blocked=True), inline, 2**40)
    kept = {t.name: t.data_type for t in onnx_fp16.convert(inline, tmp_path / "unused.data").graph.initializer}
    assert kept["floor"] == TensorProto.FLOAT and kept["w1"] == TensorProto.FLOAT16
