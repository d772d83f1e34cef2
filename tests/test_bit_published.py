"""The published-form twin: the graph the published TF Hub BiT modules have, with the edge twin's weights."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from hubedge.exporter.pipeline import VerificationFailed, verification_images
from hubedge.exporter.formats import FORMATS
from hubedge.runtimes.manifest import manifest_path
from tests.helpers import LazyExports, cpu_has_bf16

pytestmark = pytest.mark.export  # every test here builds, converts or reads with the export extra

# ort is the onnx export of the same options, converted: the published graph reaches it through onnx's route
PAIRS = [(name, precision) for name, fmt in FORMATS.items() for precision in fmt.precisions if name != "ort"]


def test_the_published_form_computes_what_the_edge_twin_computes(tiny_published, tiny_classifier):
    images = verification_images(64)
    edge = tiny_classifier.reference().predict(images)
    published = tiny_published.reference().predict(images)
    assert np.abs(published - edge).max() <= 1e-5 * np.abs(edge).max()
    assert tiny_published.weights["graph"] == "published" and tiny_published.weights["source"] == "seeded"


def _graph_ops(loaded) -> list[str]:
    """Every op type in the saved ``__call__``, inner functions included."""
    import tensorflow as tf

    concrete = loaded.module().__call__.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32))
    graph_def = concrete.graph.as_graph_def()
    return [node.op for node in graph_def.node] + [node.op for function in graph_def.library.function
                                                    for node in function.node_def]


def test_the_published_form_has_the_published_graph(tiny_published, tiny_classifier):
    """GroupNorm reshaped from a run-time shape (Shape, ConcatV2), moments, and variable leaf names that repeat,
    as in the published modules; the edge twin has none of those shape chains."""
    published, edge = _graph_ops(tiny_published), _graph_ops(tiny_classifier)
    assert published.count("Shape") >= 10 and published.count("ConcatV2") >= 10 and "SquaredDifference" in published
    assert "Shape" not in edge and "ConcatV2" not in edge
    names = [v.name for v in tiny_published.module().variables]
    assert len(set(names)) < len(names) and "group_norm/gamma:0" in names


def test_hub_load_and_keras_layer_take_the_published_form(tiny_published):
    import tensorflow_hub as hub
    import tf_keras as keras

    images = verification_images(64)[:3]
    path = str(tiny_published.savedmodel_dir)
    via_load = hub.load(path)(images).numpy()
    via_layer = keras.Sequential([keras.Input((None, None, 3)), hub.KerasLayer(path)])(images).numpy()
    np.testing.assert_allclose(via_layer, via_load, atol=1e-5)
    assert via_load.shape == (3, 1000)


def test_a_published_form_exists_for_bit_only():
    from hubedge.exporter.sources import catalog
    from hubedge.exporter.sources import build_twin
    from hubedge.runtimes.errors import HubedgeError

    with pytest.raises(HubedgeError, match="applies to BiT"):
        build_twin(catalog.get("efficientnet-lite0"), "package", form="published")


# the published graph untouched; as-is, its 5-D GroupNorms computed in 4-D (exporter.graph.as_is); re-authored into the
# edge graph (exporter.graph.reauthor)
ROUTES = ("verbatim", "as-is", "auto")


# slow (5-8 minutes): three routes x every format and precision, each verified on the 132 images, qnn on the HTP
# simulator, and the as-is route's qnn fallback search; one fixture, so that each route is exported once
@pytest.fixture(scope="module")
def published_exports(tiny_published, tmp_path_factory):
    """Every pair on each route, as one ``hubedge export`` run of that route makes them (one calibration set, one
    fp32 ONNX for onnx and qnn), each caught on its own, so one failure shows as that pair's error and not every
    one's."""
    from hubedge.exporter.options import ExportOptions
    from hubedge.runtimes.errors import HubedgeError

    results = {}
    for graph in ROUTES:
        pairs = [pair for pair in PAIRS if pair[1] != "bf16" or cpu_has_bf16()]
        exports = LazyExports(tiny_published, tmp_path_factory.mktemp(f"published-{graph}"), pairs,
                              ExportOptions(graph=graph))
        for pair in pairs:
            try:
                results[(graph, *pair)] = exports[pair]
            except HubedgeError as error:
                results[(graph, *pair)] = error
    return results


@pytest.mark.parametrize("graph", ROUTES)
@pytest.mark.parametrize("name, precision", PAIRS)
def test_every_format_exports_and_verifies_from_the_published_form(published_exports, graph, name, precision):
    """On every route every CPU artifact verifies. The QNN HTP refuses the published graph's 5-D GroupNorm
    arithmetic untouched, as it does in every published module; re-authored, it takes it. In 4-D (as-is) it runs
    plain int8, which misses the floor on the 132 images (cosine_min 0.83), so the fallback searches: on this
    x86-vnni machine the HTP simulator could not allocate the graph it chose (16-bit activations) and the export
    failed, naming both trials. The search's trials run on ONNX Runtime's CPU EP, whose int8 kernels differ
    between CPU classes, so elsewhere it may choose a graph the HTP runs: then the fallback must be recorded."""
    from hubedge.exporter.pipeline import verification_device

    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 kernels for OpenVINO: bf16 artifacts cannot be verified here")
    result = published_exports[(graph, name, precision)]
    if graph == "verbatim" and name == "qnn" and verification_device(FORMATS["qnn"]) == "npu":
        assert isinstance(result, Exception) and "cannot run wholly on the npu" in str(result)
        return
    if graph == "as-is" and name == "qnn" and verification_device(FORMATS["qnn"]) == "npu":
        if isinstance(result, Exception):
            message = str(result)
            assert isinstance(result, VerificationFailed) and "FAILED verification (cosine_min" in message, message
            assert "the fallback" in message, message  # plain int8's miss, then why the fallback wrote nothing
            return
        assert result.quantization["int8_fallback"]["plain"]["failures"], result.quantization
    assert not isinstance(result, Exception), str(result)
    assert result.verification["passed"], result.verification["failures"]
    manifest = json.loads(manifest_path(result.artifact).read_text())
    assert manifest["graph"]["route"] == {"verbatim": "as-is", "as-is": "as-is", "auto": "re-authored"}[graph]
    assert manifest["graph"].get("rewrite", {}).get("used", False) == (graph == "as-is")


def test_the_rewrite_reaches_the_converted_graph(published_exports):
    """The ONNX graphs as converted: untouched, each GroupNorm keeps its run-time shape chain and transposes whole
    activations between layouts, because they cannot cross a 5-D reshape; in 4-D, as re-authored, only the
    [N, 1, 1, C] statistics are transposed."""
    import onnx

    def counts(graph):
        model = onnx.shape_inference.infer_shapes(onnx.load(str(published_exports[(graph, "onnx", "fp32")].artifact)))
        shapes = {value.name: [dim.dim_value if dim.HasField("dim_value") else None
                               for dim in value.type.tensor_type.shape.dim] for value in model.graph.value_info}
        whole = [node for node in model.graph.node if node.op_type == "Transpose" and node.input[0] in shapes
                 and shapes[node.input[0]][1:3] != [1, 1]]
        return Counter(node.op_type for node in model.graph.node)["Shape"], len(whole)

    verbatim, rewritten, reauthored = counts("verbatim"), counts("as-is"), counts("auto")
    assert verbatim[0] > 0 and rewritten[0] == reauthored[0] == 0, (verbatim, rewritten, reauthored)
    assert rewritten[1] == reauthored[1] < verbatim[1], (verbatim, rewritten, reauthored)  # stem and head only


def test_the_cli_refuses_a_published_form_where_there_is_none(capsys):
    from hubedge.cli import main

    code = main(["predict", "--model", "efficientnet-lite0", "--weights", "package", "--twin-form", "published",
                 "calibration_data/skimage-coffee.jpg"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--twin-form published applies to BiT twins built offline" in err[-1]
