"""The full BiT-M R50x1 geometry: the 21k classifier and the conveyance expert, as hub modules (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from hubedge.exporter.sources import load_model
from hubedge.runtimes.preprocess import preprocess

pytestmark = [pytest.mark.slow, pytest.mark.export]


@pytest.fixture(scope="module")
def in21k():
    return load_model("bit-m-r50x1-in21k", "seeded")


@pytest.fixture(scope="module")
def images(photos):
    return preprocess(photos, 224)


@pytest.fixture(scope="module")
def outputs(in21k, images):
    """The edge twin's and the published form's outputs on the photos: two full-geometry passes, made once."""
    published = load_model("bit-m-r50x1-in21k", "seeded", twin_form="published")
    return published, in21k.reference().predict(images), published.reference().predict(images)


def test_in21k_twin_is_a_hub_module_with_21843_logits(in21k, images):
    import tensorflow_hub as hub
    import tf_keras as keras

    from hubedge.exporter.sources.bit import BitTwin
    from hubedge.exporter.sources import _centring_batches

    assert in21k.weights["source"] == "seeded" and in21k.info.activation == "sigmoid"
    via_load = hub.load(str(in21k.savedmodel_dir))(images[:2]).numpy()
    assert via_load.shape == (2, 21843)
    layer = keras.Sequential([keras.Input((None, None, 3)), hub.KerasLayer(str(in21k.savedmodel_dir))])
    np.testing.assert_allclose(layer(images[:2]).numpy(), via_load, atol=1e-5)
    twin = BitTwin(in21k.spec.architecture, 21843)  # the Keras model, rebuilt from the same recipe
    twin.seed(0, centre_on=lambda: _centring_batches(224))
    np.testing.assert_allclose(twin.model(images[:2]).numpy(), via_load, atol=1e-5)
    backbone = twin.model.count_params() - (2048 * 21843 + 21843)
    assert backbone == 23_500_352  # BiT R50x1: 25.5 M with a 1000-class head


def test_seeded_in21k_twin_ranks_photos_differently(in21k, images):
    """Seeded logits must be photo-specific, or every agreement figure computed on them is meaningless."""
    logits = in21k.reference().predict(images)
    assert len(set(logits.argmax(axis=1))) >= len(images) - 1
    unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)
    pairwise = (unit @ unit.T)[np.triu_indices(len(images), 1)]
    assert pairwise.mean() < 0.5
    noise = np.random.default_rng(0).normal(0.0, 0.01, images.shape).astype(np.float32)
    noisy = in21k.reference().predict(np.clip(images + noise, 0.0, 1.0))
    assert np.mean(noisy.argmax(axis=1) == logits.argmax(axis=1)) >= 0.85
    cos = np.sum(noisy * logits, axis=1) / np.linalg.norm(noisy, axis=1) / np.linalg.norm(logits, axis=1)
    assert cos.min() > 0.995


def test_conveyance_expert_twin_gives_2048_features(images):
    expert = load_model("google/experts/bit/r50x1/in21k/conveyance/1", "seeded")
    features = expert.reference().predict(images[:3])
    assert expert.info.name == "expert-conveyance" and features.shape == (3, 2048)
    assert np.all(np.linalg.norm(features, axis=1) > 0)


# slow (1.5 minutes with its fixture): builds the full-geometry twin in the published graph form and runs both forms
# on the images
def test_the_published_form_r50x1_computes_what_the_edge_twin_computes(outputs):
    """The stand-in for --weights hub at full geometry: the published modules' graph with the twin's weights."""
    published, edge, original = outputs
    assert published.weights["graph"] == "published"
    assert np.abs(original - edge).max() <= 1e-5 * np.abs(edge).max()


def test_the_published_form_r50x1_is_re_authored_into_the_edge_twins_graph(outputs, images):
    """Full geometry: all 153 variables recognised by layer order, the rebuilt graph equal to the module."""
    from hubedge.exporter.graph.reauthor import choose_graph

    published, edge, original = outputs
    chosen = choose_graph(published)
    assert chosen.graph["route"] == "re-authored", chosen.graph
    assert (chosen.graph["architecture"], chosen.graph["num_classes"]) == ("R50x1", 21843)
    assert chosen.graph["matched_by"] == "layer order" and len(published.module().variables) == 153
    rebuilt = np.asarray(chosen.export_module()(images))
    assert np.abs(rebuilt - original).max() <= 1e-5 * np.abs(original).max()
    assert np.abs(rebuilt - edge).max() <= 1e-5 * np.abs(original).max()
