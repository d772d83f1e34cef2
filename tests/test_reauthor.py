"""Re-authoring: a BiT module recognised from its variables, rebuilt in the edge graph, proven equal to the module;
everything else (asked for, not a BiT, a near miss) exported as-is, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubedge.exporter.sources.bit_layout import BitLayout, Unrecognised, expected_layout, official_name, recognise
from hubedge.exporter.sources.catalog import Architecture
from hubedge.exporter.pipeline import verification_images
from hubedge.exporter.graph.reauthor import choose_graph, describe_route

TINY = Architecture((1, 1, 1, 1), 0.5)


def _fake(layout):
    return [(name, np.zeros(shape, np.float32)) for name, shape in layout]


def test_the_expected_layout_is_the_builders_and_the_published_modules(tiny_published):
    """Official names as the edge builder keeps them; order and shapes as the published form's module lists them."""
    from hubedge.exporter.sources.bit import BitTwin

    layout = expected_layout(TINY, 1000)
    assert {name for name, _ in layout} == set(BitTwin(TINY, 1000).weight_names())
    module_shapes = [tuple(v.shape) for v in tiny_published.module().variables]
    assert module_shapes == [shape[2:] if name.endswith("head/conv2d/kernel") else shape for name, shape in layout]
    r50 = expected_layout(Architecture.resnet(50, 1), 21843)
    assert len(r50) == 1 + 16 * 9 + 4 + 2 + 2 and r50[-2] == ("resnet/head/conv2d/kernel", (1, 1, 2048, 21843))


@pytest.mark.parametrize("arch, classes", [(Architecture.resnet(50, 1), 21843), (Architecture.resnet(101, 3), None),
                                           (Architecture.resnet(152, 4), 1000), (TINY, 7)])
def test_architectures_are_recognised_from_shapes_by_order_and_by_name(arch, classes):
    layout = expected_layout(arch, classes)
    by_order = recognise([(name.split("/")[-1] + ":0", value) for name, value in _fake(layout)])
    assert isinstance(by_order, BitLayout), by_order
    assert (by_order.architecture, by_order.num_classes, by_order.matched_by) == (arch, classes, "layer order")
    shuffled = list(reversed(_fake(layout)))  # full official names: order no longer matters
    by_name = recognise([("module/" + name + ":0", value) for name, value in shuffled])
    assert isinstance(by_name, BitLayout) and by_name.matched_by == "names" and by_name.architecture == arch


def test_the_published_head_name_maps_to_the_checkpoints():
    assert official_name("resnet/head/dense/kernel:0") == "resnet/head/conv2d/kernel"
    assert official_name("bit/resnet/block1/unit01/a/group_norm/gamma:0") == "resnet/block1/unit01/a/group_norm/gamma"


def test_a_removed_or_reshaped_variable_is_a_near_miss_that_names_it():
    layout = _fake(expected_layout(TINY, 1000))
    leafy = [(name.split("/")[-1] + ":0", value) for name, value in layout]
    removed = recognise(leafy[:5] + leafy[6:])
    assert isinstance(removed, Unrecognised) and removed.near_miss
    assert "variable 5 (kernel:0, shape [3, 3, 32, 32])" in removed.reason and "b/group_norm/beta" in removed.reason
    reshaped = list(leafy)
    reshaped[3] = ("kernel:0", np.zeros((1, 1, 32, 16), np.float32))
    found = recognise(reshaped)
    assert isinstance(found, Unrecognised) and found.near_miss and "variable 3" in found.reason
    assert "unit01/a/standardized_conv2d/kernel of shape [1, 1, 32, 32]" in found.reason
    extra = recognise(leafy + [("bias:0", np.zeros((3,), np.float32))])
    assert isinstance(extra, Unrecognised) and extra.near_miss


def test_other_models_are_not_a_bit_and_no_near_miss():
    found = recognise([("conv/kernel:0", np.zeros((3, 3, 3, 16))), ("conv/bias:0", np.zeros(16))])
    assert isinstance(found, Unrecognised) and not found.near_miss and "7x7 RGB root" in found.reason
    assert recognise([]) == Unrecognised("it has no variables", near_miss=False)


# -- the route on real SavedModels ---------------------------------------------------------------------


def _graph_ops(module) -> list[str]:
    import tensorflow as tf

    graph_def = module.__call__.get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.float32)).graph.as_graph_def()
    return [n.op for n in graph_def.node] + [n.op for f in graph_def.library.function for n in f.node_def]


def test_a_published_bit_is_re_authored_recorded_and_equal_to_the_module(tiny_published, tiny_classifier):
    chosen = choose_graph(tiny_published)
    record = chosen.graph
    assert record["route"] == "re-authored" and record["matched_by"] == "layer order"
    assert record["units"] == [1, 1, 1, 1] and record["num_classes"] == 1000 and record["equivalence"]["equal"]
    images = verification_images(64)
    original = tiny_published.reference().predict(images)
    rebuilt = np.asarray(chosen.export_module()(images))
    assert np.abs(rebuilt - original).max() <= 1e-5 * np.abs(original).max()
    ops, edge_ops = _graph_ops(chosen.export_module()), _graph_ops(tiny_classifier.module())
    assert "Shape" not in ops and "ConcatV2" not in ops  # no run-time shape chains
    assert "Sqrt" in edge_ops and "Sqrt" not in ops  # weight standardization folded into the constant kernels
    assert chosen.module() is tiny_published.module()  # the module as loaded stays the reference
    assert choose_graph(tiny_published).graph is chosen.graph  # chosen once per model, rebuilt once


def test_hubedges_own_edge_builds_and_as_is_requests_keep_their_graph(tiny_classifier, tiny_published):
    assert choose_graph(tiny_classifier).graph == {"route": "as-is", "edge_form": True,
                                                   "why": "hubedge's own build: its graph is the edge form already"}
    as_is = choose_graph(tiny_published, "as-is")  # its own graph, GroupNorms in 4-D: tests/test_graph_rewrite.py
    assert as_is.graph["route"] == "as-is" and as_is.graph["why"].startswith("asked for (--graph as-is)")
    assert describe_route(as_is.graph).startswith("graph: as-is, asked for")
    verbatim = choose_graph(tiny_published, "verbatim")
    assert verbatim.export_dir is None and describe_route(verbatim.graph).startswith("graph: as-is, asked for")


def _resave(module, directory: Path, variables) -> Path:
    """A hub-form SavedModel that calls ``module`` but lists ``variables``: how a tampered module presents itself."""
    import tensorflow as tf

    new = tf.__internal__.tracking.AutoTrackable()
    new._source = module  # keeps every variable the function uses tracked, listed or not
    new.__call__ = module.__call__
    new.variables = list(variables)
    new.trainable_variables = list(variables)
    new.regularization_losses = []
    tf.saved_model.save(new, str(directory))
    return directory


@pytest.fixture(scope="module")
def tampered(tiny_published, tmp_path_factory) -> dict[str, Path]:
    import tensorflow as tf

    module = tiny_published.module()
    variables = list(module.variables)
    root = tmp_path_factory.mktemp("tampered")
    swapped = list(variables)
    swapped[4], swapped[7] = swapped[7], swapped[4]  # unit01's b and c GroupNorm gammas: same shape, same leaf name
    return {
        "removed": _resave(module, root / "removed", variables[:5] + variables[6:]),
        "reshaped": _resave(module, root / "reshaped", variables[:3] + [tf.Variable(tf.zeros([1, 1, 32, 16]),
                                                                                    name="kernel")] + variables[4:]),
        "swapped": _resave(module, root / "swapped", swapped),
    }


@pytest.mark.parametrize("kind, says", [
    ("removed", "looks like a BiT but does not match one: variable 5"),
    ("reshaped", "looks like a BiT but does not match one: variable 3"),
    ("swapped", "but the rebuilt graph computes something else"),
])
def test_a_tampered_module_goes_as_is_with_a_warning_naming_the_mismatch(tampered, kind, says, tmp_path, capsys):
    from hubedge.cli import main

    code = main(["export", "--model", str(tampered[kind]), "--format", "tflite", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.strip().startswith("warning: graph: as-is")]
    assert len(warning) == 1 and says in warning[0], err
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["graph"]["route"] == "as-is" and manifest["graph"]["warning"] is True
    assert manifest["verification"]["passed"]  # its own graph, verified against itself


@pytest.mark.export
def test_a_model_that_is_no_bit_goes_as_is_in_one_line(tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    from hubedge.exporter.sources.savedmodel import save_hub_module
    from hubedge.exporter.sources import load_model
    from hubedge.runtimes.modelinfo import ModelInfo

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs)))
    save_hub_module(model, ModelInfo("x", "feature_vector", 8, "none", None, 32), tmp_path / "m", {})
    tf.io.gfile.rmtree(str(tmp_path / "m" / "assets.extra"))
    chosen = choose_graph(load_model(str(tmp_path / "m")))
    assert chosen.graph["route"] == "as-is" and "warning" not in chosen.graph
    assert chosen.graph["why"].startswith("not recognised as a BiT (its first variable has shape (3, 3, 3, 8)")
    assert "\n" not in describe_route(chosen.graph)


def test_the_cli_re_authors_by_default_and_honours_graph_as_is(tiny_published, tmp_path, capsys):
    from hubedge.cli import main

    routes = {}
    for graph in ("auto", "as-is"):
        out = tmp_path / graph
        assert main(["export", "--model", str(tiny_published.savedmodel_dir), "--format", "tflite",
                     "--graph", graph, "--output", str(out)]) == 0
        err = capsys.readouterr().err
        manifest = json.loads(next(out.glob("*.json")).read_text())
        routes[graph] = manifest["graph"]["route"]
        assert manifest["verification"]["passed"] and manifest["verification"]["cosine_min"] >= 0.99999
        assert f"graph: {routes[graph]}" in err
        # the reference is the module as given, whatever was converted
        assert manifest["weights"]["savedmodel"] == str(tiny_published.savedmodel_dir)
    assert routes == {"auto": "re-authored", "as-is": "as-is"}


def test_verification_judges_a_rebuild_against_the_module_as_loaded(tampered, tmp_path, monkeypatch):
    """With the equivalence check fooled, a wrong rebuild (the swapped module's weights in the wrong places) is
    exported, and verification fails it: the reference is the user's module, not the rebuilt graph."""
    from hubedge.exporter.graph import reauthor
    from hubedge.exporter.pipeline import VerificationFailed, export_one
    from hubedge.exporter.formats import FORMATS
    from hubedge.exporter.sources import load_model

    monkeypatch.setattr(reauthor, "_equivalence", lambda loaded, rebuilt: {"equal": True, "max_relative_diff": 0.0})
    chosen = choose_graph(load_model(str(tampered["swapped"])))
    assert chosen.graph["route"] == "re-authored"
    with pytest.raises(VerificationFailed, match="FAILED verification"):
        export_one(chosen, FORMATS["tflite"], "fp32", tmp_path)
    assert not list(tmp_path.glob("*.tflite"))


def test_a_re_authored_savedmodel_says_so_and_is_not_re_authored_again(tiny_published, tmp_path):
    from hubedge.exporter.pipeline import export_one
    from hubedge.exporter.formats import FORMATS
    from hubedge.exporter.sources.savedmodel import read_module_info
    from hubedge.exporter.sources import load_model

    result = export_one(choose_graph(tiny_published), FORMATS["savedmodel"], "fp32", tmp_path, verify_output=False)
    record = read_module_info(result.artifact)["weights"]
    assert record["graph"] == "re-authored" and record["reauthored_from"] == str(tiny_published.savedmodel_dir)
    again = load_model(str(result.artifact))
    assert again.weights_record()["sha256"] != tiny_published.weights_record()["sha256"]
    assert choose_graph(again).graph["why"].startswith("re-authored by hubedge already")
