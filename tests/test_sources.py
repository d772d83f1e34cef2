"""Model sources: hub-form twins, the hub cache, local SavedModels, and the errors of each."""

from __future__ import annotations

import hashlib
import shutil
import socket

import numpy as np
import pytest

from hubedge.exporter.sources import load_model
from hubedge.runtimes.errors import CorruptModelError, HubedgeError, ModelNotFoundError, SourceUnavailableError
from hubedge.runtimes.preprocess import preprocess

pytestmark = pytest.mark.export  # every test here builds, converts or reads with the export extra


def test_the_network_guard_blocks_connections():
    with pytest.raises(ConnectionRefusedError, match="disabled"):
        socket.create_connection(("tfhub.dev", 443), timeout=1)


def test_hub_load_and_keras_layer_agree_inside_a_keras_model(tiny_classifier, photos):
    import tensorflow_hub as hub
    import tf_keras as keras

    images = preprocess(photos[:3], 64)
    module = hub.load(str(tiny_classifier.savedmodel_dir))
    layer_model = keras.Sequential([keras.Input((None, None, 3)), hub.KerasLayer(str(tiny_classifier.savedmodel_dir))])
    via_hub = module(images).numpy()
    np.testing.assert_allclose(layer_model(images).numpy(), via_hub, atol=1e-5)
    assert via_hub.shape == (3, 1000)
    assert len(module.variables) == len(module.trainable_variables) > 0


def test_keras_model_and_its_saved_module_agree(tmp_path, photos):
    import tensorflow_hub as hub

    from hubedge.exporter.sources.bit import BitTwin
    from hubedge.exporter.sources.catalog import Architecture
    from hubedge.exporter.sources.savedmodel import save_hub_module
    from hubedge.runtimes.modelinfo import ModelInfo

    twin = BitTwin(Architecture((1, 1, 1, 1), 0.5), 12)
    twin.seed(4)
    save_hub_module(twin.model, ModelInfo("t", "classification", 12, "softmax", None, 64), tmp_path / "m", {})
    images = preprocess(photos[:2], 80)  # any size: hub modules are not tied to one
    np.testing.assert_allclose(hub.load(str(tmp_path / "m"))(images).numpy(), twin.model(images).numpy(), atol=1e-5)
    layer = hub.KerasLayer(str(tmp_path / "m"))
    np.testing.assert_allclose(layer(images).numpy(), twin.model(images).numpy(), atol=1e-5)


def test_a_local_savedmodel_knows_what_it_is(tiny_classifier, tiny_features):
    loaded = load_model(str(tiny_classifier.savedmodel_dir))
    assert loaded.info == tiny_classifier.info and loaded.weights["source"] == "seeded"
    features = load_model(str(tiny_features.savedmodel_dir))
    assert features.info.task == "feature_vector" and features.info.num_outputs == 1024


def test_a_savedmodel_from_elsewhere_is_inspected(tiny_classifier, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_classifier.savedmodel_dir, plain, ignore=shutil.ignore_patterns("assets.extra"))
    loaded = load_model(str(plain))
    assert loaded.info.num_outputs == 1000 and loaded.info.activation == "softmax"
    assert loaded.info.labels == "ilsvrc2012" and loaded.weights["inferred_info"] is True


def test_hub_handles_resolve_through_the_tfhub_cache_without_network(tiny_published, monkeypatch, tmp_path):
    """A module already in TFHUB_CACHE_DIR loads by its handle, exactly as tensorflow_hub caches it. The stand-in
    is the published graph form without hubedge's record, as a download would be; export re-authors it."""
    from hubedge.exporter.graph.reauthor import choose_graph

    url = "https://tfhub.dev/google/bit/m-r50x1/ilsvrc2012_classification/1"
    cache = tmp_path / "hubcache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    shutil.copytree(tiny_published.savedmodel_dir, cache / hashlib.sha1(url.encode()).hexdigest(),
                    ignore=shutil.ignore_patterns("assets.extra"))
    loaded = load_model("bit-m-r50x1-ilsvrc2012", "hub")
    assert loaded.savedmodel_dir.parent == cache and loaded.weights["source"] == "hub"
    assert loaded.reference().predict(np.full((1, 64, 64, 3), 0.5, np.float32)).shape == (1, 1000)
    assert load_model(url, "hub").savedmodel_dir == loaded.savedmodel_dir
    assert choose_graph(loaded).graph["route"] == "re-authored"


@pytest.mark.parametrize("model", [
    "bit-m-r50x1-in21k",
    "google/experts/bit/r50x1/in21k/conveyance/1",
    "https://tfhub.dev/google/bit/s-r50x1/1",
    "https://www.kaggle.com/models/google/bit/tensorFlow2/m-r50x1/1",
])
def test_no_network_fails_fast_naming_the_offline_choices(model):
    with pytest.raises(SourceUnavailableError) as caught:
        load_model(model, "hub")
    message = str(caught.value)
    assert "cannot download" in message and "--weights seeded" in message and ".npz" in message
    assert "\n" not in message


def test_bad_sources_get_one_clear_error(tmp_path, tiny_classifier):
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        load_model("bit-x-r50x1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptModelError, match="not a SavedModel"):
        load_model(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier.savedmodel_dir, broken)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorruptModelError, match="cannot load the SavedModel"):
        load_model(str(broken))
    with pytest.raises(HubedgeError, match="brings its own weights"):
        load_model(str(tiny_classifier.savedmodel_dir), "seeded")
    with pytest.raises(ModelNotFoundError, match="checkpoint not found"):
        load_model("bit-m-r50x1", str(tmp_path / "BiT-M-R50x1.npz"))
    with pytest.raises(ModelNotFoundError, match="not in the catalog"):
        load_model("https://tfhub.dev/someone/else/1", "seeded")


def test_npz_weights_build_a_twin_labelled_as_such(tmp_path, monkeypatch, photos):
    """An official-style checkpoint (here a tiny one) loads into the catalog architecture by name."""
    from hubedge.exporter.sources import catalog
    from hubedge.exporter.sources.bit import BitTwin
    from hubedge.exporter.sources import build_twin
    from tests.helpers import tiny_spec

    spec = tiny_spec("feature_vector", name="tiny-npz")
    source = BitTwin(spec.architecture, None)
    source.seed(9)
    source.save_npz(tmp_path / "BiT-tiny.npz")
    monkeypatch.setattr(catalog, "find", lambda name: spec if name == spec.name else None)
    loaded = build_twin(spec, str(tmp_path / "BiT-tiny.npz"))
    assert loaded.weights["source"] == "npz" and loaded.weights["checkpoint"].endswith("BiT-tiny.npz")
    images = preprocess(photos[:2], 64)
    np.testing.assert_allclose(loaded.reference().predict(images), source.model(images).numpy(), atol=1e-5)


def test_a_bit_npz_given_as_the_model_is_recognised_from_its_weights(tmp_path, photos):
    """No catalog entry needed: the architecture and head come from the checkpoint's names and shapes."""
    from hubedge.exporter.sources.bit import BitTwin
    from hubedge.exporter.sources.catalog import Architecture
    from hubedge.exporter.graph.reauthor import choose_graph

    source = BitTwin(Architecture((1, 2, 1, 1), 0.5), 1000)
    source.seed(3)
    source.save_npz(tmp_path / "BiT-Tiny-ILSVRC.npz")
    loaded = load_model(str(tmp_path / "BiT-Tiny-ILSVRC.npz"))
    assert (loaded.info.name, loaded.info.num_outputs, loaded.info.activation) == ("bit-tiny-ilsvrc", 1000, "softmax")
    assert loaded.weights["source"] == "npz" and "units[1, 2, 1, 1]x0.5" in loaded.weights["description"]
    images = preprocess(photos[:2], 64)
    np.testing.assert_allclose(loaded.reference().predict(images), source.model(images).numpy(), atol=1e-5)
    assert choose_graph(loaded).graph["why"].startswith("hubedge's own build")
    weights = source.get_weights()
    del weights["resnet/block2/unit02/b/group_norm/beta"]
    np.savez(tmp_path / "truncated.npz", **weights)
    with pytest.raises(CorruptModelError, match="not a BiT checkpoint.*lacks resnet/block2/unit02/b/group_norm/beta"):
        load_model(str(tmp_path / "truncated.npz"))
    np.savez(tmp_path / "other.npz", w=np.zeros((3, 3)))
    with pytest.raises(CorruptModelError, match="not a BiT checkpoint"):
        load_model(str(tmp_path / "other.npz"))
