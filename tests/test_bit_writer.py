"""The BiT graph writers (exporter/formats/bit_graph.py, bit_onnx.py, bit_openvino.py) against the converters.

On tiny twins of several depths and widths (one and two units per stage; widths 0.5 and 1.5, so GroupNorm groups of
1 to 32 channels, 3 among them; a classification head and none), the ONNX graph written from the weights has the
op types and counts of tf2onnx's for the same SavedModel, the OpenVINO model those of ``ov.convert_model``, and
both compute the same outputs within 1e-5 of the largest. The artifacts made from them through every precision
are verified by the export tests (tiny_exports, the R50x1 tests), which now take this route.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

from hubedge.exporter.formats import onnx as onnx_format
from hubedge.exporter.formats import openvino as openvino_format
from hubedge.exporter.formats.bit_graph import edge_layout
from hubedge.exporter.graph.reauthor import choose_graph
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources import build_twin
from hubedge.exporter.sources.catalog import Architecture, ModelSpec
from hubedge.runtimes.preprocess import preprocess

pytestmark = pytest.mark.export

# (units per stage, width, head outputs or None): depth and width vary the walk; size 64 keeps each conversion short
ARCHITECTURES = {
    "units1-x0.5-head": ((1, 1, 1, 1), 0.5, 10),
    "units2211-x1.5-features": ((2, 2, 1, 1), 1.5, None),
}
RELATIVE = 1e-5


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def twin(request, tmp_path_factory):
    units, width, head = ARCHITECTURES[request.param]
    arch = Architecture(units, width)
    name = f"tiny-{request.param}"
    if head is None:
        spec = ModelSpec(name, f"test/{name}/1", "test", "feature_vector", arch.feature_size, "none", None, 64, arch)
    else:
        spec = ModelSpec(name, f"test/{name}/1", "test", "classification", head, "softmax", None, 64, arch)
    loaded = choose_graph(build_twin(spec, "seeded", tmp_path_factory.mktemp(name)))
    assert loaded.graph["edge_form"]
    return loaded


@pytest.fixture(scope="module")
def images(photos) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([preprocess(photos[:2], 64), rng.random((1, 64, 64, 3), np.float32)])


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_the_onnx_graph_written_from_the_weights_is_tf2onnxs_op_for_op(twin, images, tmp_path):
    import onnx
    import onnxruntime as ort

    work = Workspace.for_model(64, ExportOptions(), tmp_path)
    converted = onnx_format.convert_fp32(twin, work, tmp_path, graph_writer="converter")
    written = onnx_format.convert_fp32(twin, work, tmp_path, graph_writer="direct")
    assert "tf2onnx" in converted.method and written.method.startswith("written from the weights")
    assert converted.converter_peak > 0 and written.converter_peak == 0
    ops = [collections.Counter(node.op_type for node in onnx.load(str(made.path)).graph.node)
           for made in (converted, written)]
    assert ops[1] == ops[0]
    onnx.checker.check_model(str(written.path), full_check=True)

    def run(made):
        session = ort.InferenceSession(str(made.path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0]

    assert _relative(run(written), run(converted)) <= RELATIVE


def test_the_openvino_model_built_from_the_weights_is_convert_models_op_for_op(twin, images):
    import openvino as ov

    models = {writer: openvino_format.fp32_model(twin, 64, -1, writer) for writer in ("converter", "direct")}
    assert models["direct"][1].startswith("written from the weights") and "ov.convert_model" in models["converter"][1]

    def ops(model):
        return collections.Counter(op.get_type_name() for op in model.get_ordered_ops())

    assert ops(models["direct"][0]) == ops(models["converter"][0])
    outputs = {writer: ov.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(images)[0]
               for writer, (model, _) in models.items()}
    assert _relative(outputs["direct"], outputs["converter"]) <= RELATIVE


def test_only_hubedges_edge_graph_is_written(tiny_classifier, tiny_published):
    """A module exported as-is (here the published form, asked for as-is) is converted, and says why; so is any
    export that asks for the converter."""
    edge = choose_graph(tiny_classifier)
    assert not isinstance(edge_layout(edge), str)
    assert edge_layout(edge, "converter") == "asked for (--graph-writer converter)"
    as_is = choose_graph(tiny_published, "as-is")
    assert edge_layout(as_is) == "its export graph is not hubedge's edge BiT graph"
    wrong = dataclasses.replace(edge, info=dataclasses.replace(edge.info, num_outputs=7))
    assert "but it outputs 7 values" in edge_layout(wrong)
