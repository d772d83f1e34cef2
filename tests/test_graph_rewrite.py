"""The as-is route's general rewrite (exporter.graph.graph_rewrite, exporter.graph.as_is): every 5-D GroupNorm it
can prove liftable is computed in 4-D, everything else is left exactly as it was, and what is exported must still equal
the module."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubedge.exporter.graph.as_is import _frozen
from hubedge.exporter.graph.graph_rewrite import rewrite_group_norms
from hubedge.exporter.graph.reauthor import choose_graph, describe_route


def _run(graph_def, input_name: str, output_name: str, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(output_name, {input_name: images})


def _ranks(graph_def, input_name: str) -> set[int]:
    """The ranks of every tensor the graph computes, with its input at [None, None, None, 3]."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return {t.shape.rank for op in graph.get_operations() for t in op.outputs if t.shape.rank is not None}


def _rewritten(function, size: int = 16):
    graph_def, input_name, output_name = _frozen(function, size)
    return graph_def, input_name, output_name, rewrite_group_norms(graph_def, input_name, output_name)


def _conv_then(norm, channels: int = 32):
    """A small conv net whose normalization is ``norm``, called like a hub module."""
    import tf_keras as keras

    conv = keras.layers.Conv2D(channels, 3, padding="same")
    conv.build((None, None, None, 3))
    conv.set_weights([np.random.default_rng(1).normal(size=w.shape).astype(np.float32) for w in conv.get_weights()])
    return lambda images: norm(conv(images)) * 2.0


def _published_group_norm(channels: int = 32):
    from hubedge.exporter.sources.bit_published import PublishedGroupNorm

    layer = PublishedGroupNorm()
    layer.build((None, None, None, channels))
    rng = np.random.default_rng(2)
    layer.set_weights([rng.normal(1, 0.5, channels).astype(np.float32),
                       rng.normal(0, 0.5, channels).astype(np.float32)])
    return layer


IMAGES = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)


def test_the_published_bit_group_norm_is_computed_in_4d_and_equal_at_any_size():
    graph_def, i, o, result = _rewritten(_conv_then(_published_group_norm()))
    assert result.rewritten == 1 and result.left == []
    assert 5 in _ranks(graph_def, i) and 5 not in _ranks(result.graph_def, i)  # the 5-D detour is gone
    ops = {node.op for node in result.graph_def.node}
    assert "Shape" not in ops and "ConcatV2" not in ops  # the run-time shape chain went with it
    for images in (IMAGES, np.random.default_rng(3).random((1, 24, 11, 3), np.float32)):
        want, got = _run(graph_def, i, o, images), _run(result.graph_def, i, o, images)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_keras_own_group_normalization_is_rewritten_too():
    """Not a BiT pattern: Keras 3's layer builds its shapes with a stack and computes the variance as
    E[x²] − E[x]², and the rewrite lifts it the same way."""
    import keras

    layer = keras.layers.GroupNormalization(groups=8, epsilon=1e-3)
    layer.build((None, None, None, 32))
    rng = np.random.default_rng(4)
    layer.set_weights([rng.normal(1, 0.5, 32).astype(np.float32), rng.normal(0, 0.5, 32).astype(np.float32)])
    graph_def, i, o, result = _rewritten(_conv_then(layer))
    assert result.rewritten == 1, result.left
    assert 5 not in _ranks(result.graph_def, i)
    want, got = _run(graph_def, i, o, IMAGES), _run(result.graph_def, i, o, IMAGES)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def _grouped(images, shape=None):
    import tensorflow as tf

    dims = tf.shape(images)
    shape = shape if shape is not None else tf.concat([dims[:-1], [8, 4]], axis=-1)
    return tf.reshape(images, shape), dims


def _five_d(body):
    """A module computing ``body(grouped, dims)`` on a 32-channel conv output, reshaped to [N, H, W, 8, 4]."""
    import tensorflow as tf

    def norm(x):
        grouped, dims = _grouped(x)
        return tf.reshape(body(grouped, dims), dims)

    return _conv_then(norm)


@pytest.mark.parametrize("why, body", [
    ("averages over axes [1, 2, 3, 4]", lambda g, d: g - __import__("tensorflow").reduce_mean(
        g, [1, 2, 3, 4], keepdims=True)),
    ("Max, which the rewrite does not lift", lambda g, d: g - __import__("tensorflow").reduce_max(
        g, [1, 2, 4], keepdims=True)),
    ("not per group or channel", lambda g, d: g * np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1, 1)),
])
def test_what_the_rewrite_cannot_lift_is_left_exactly_as_it_was(why, body):
    graph_def, i, o, result = _rewritten(_five_d(body))
    assert result.rewritten == 0 and len(result.left) == 1 and why in result.left[0], result.left
    assert result.graph_def is graph_def


def test_a_reshape_that_moves_the_spatial_dims_is_no_group_norm():
    import tensorflow as tf

    def norm(x):
        dims = tf.shape(x)
        grouped = tf.reshape(x, tf.stack([dims[0], dims[2], dims[1], 8, 4]))  # H and W swapped: not a GroupNorm
        mean = tf.reduce_mean(grouped, [1, 2, 4], keepdims=True)
        return tf.reshape(grouped - mean, dims)

    graph_def, i, o, result = _rewritten(_conv_then(norm))
    assert result.rewritten == 0 and "does not keep the batch and spatial dims" in result.left[0]


def test_a_grouped_tensor_read_outside_the_site_keeps_the_site_as_it_was():
    import tensorflow as tf

    def norm(x):
        grouped, dims = _grouped(x)
        mean = tf.reduce_mean(grouped, [1, 2, 4], keepdims=True)
        return tf.reshape(grouped - mean, dims) + tf.reduce_sum(tf.reduce_max(grouped, [3, 4]))

    graph_def, i, o, result = _rewritten(_conv_then(norm))
    assert result.rewritten == 0 and "Max" in result.left[0]


# -- the route ------------------------------------------------------------------------------------------------


def test_the_as_is_route_converts_the_published_graph_with_its_group_norms_in_4d(tiny_published):
    import tensorflow as tf
    import tensorflow_hub as hub

    chosen = choose_graph(tiny_published, "as-is")
    rewrite = chosen.graph["rewrite"]
    assert chosen.graph["route"] == "as-is" and "warning" not in chosen.graph
    assert rewrite["used"] and rewrite["group_norms_in_4d"] == 13 and rewrite["group_norms_left"] == 0
    assert rewrite["equivalence"]["equal"] and rewrite["equivalence"]["max_relative_diff"] <= 1e-5
    assert str(chosen.export_dir) == rewrite["rewritten_savedmodel"]
    assert chosen.module() is tiny_published.module()  # the module as loaded stays the reference
    assert "13 5-D GroupNorms computed in 4-D" in describe_route(chosen.graph)
    # a hub-form SavedModel like the original: any size, hub.load and hub.KerasLayer
    images = tf.constant(np.random.default_rng(5).random((2, 40, 28, 3), np.float32))
    original = tiny_published.module()(images).numpy()
    for rewritten in (hub.load(str(chosen.export_dir)), hub.KerasLayer(str(chosen.export_dir))):
        np.testing.assert_allclose(rewritten(images).numpy(), original, rtol=0, atol=1e-5 * np.abs(original).max())
    record = json.loads((chosen.export_dir / "assets.extra" / "hubedge_model.json").read_text())
    assert record["weights"]["graph"] == "rewritten" and record["weights"]["rewrite"]["group_norms_in_4d"] == 13


def test_graph_verbatim_converts_the_module_untouched(tiny_published):
    chosen = choose_graph(tiny_published, "verbatim")
    assert chosen.export_dir is None and "rewrite" not in chosen.graph
    assert describe_route(chosen.graph) == ("graph: as-is, asked for (--graph verbatim): the module's own graph, "
                                            "not rewritten")


def test_a_rewrite_that_computes_something_else_is_not_used(tiny_published, tmp_path, monkeypatch):
    """The rewrite is held to the same proof as re-authoring: a wrong one (here γ doubled) sends the module's own
    graph to the converters, with a warning."""
    from hubedge.exporter.graph import as_is, graph_rewrite
    from hubedge.exporter.sources import load_model

    per_channel = graph_rewrite._per_channel
    monkeypatch.setattr(graph_rewrite, "_per_channel", lambda *args: per_channel(*args) * 2)
    monkeypatch.setattr(as_is, "cache_dir", lambda: tmp_path)  # never cache the wrong rewrite
    chosen = choose_graph(load_model(str(tiny_published.savedmodel_dir)), "as-is")
    assert chosen.export_dir is None and chosen.graph["warning"] is True
    assert chosen.graph["rewrite"]["used"] is False
    line = describe_route(chosen.graph)
    assert line.startswith("warning: graph: as-is, ") and "GroupNorm rewrite not used: the rewritten graph " \
        "computes something else" in line and "\n" not in line
