"""The catalog lists every BiT model on TF Hub with the right task, outputs and activation."""

from __future__ import annotations

import pytest

from hubedge.exporter.sources import catalog
from hubedge.runtimes.errors import ModelNotFoundError


def test_catalog_has_all_73_bit_models_and_the_yardstick_with_unique_names_and_handles():
    everything = catalog.all_models()
    assert len({s.name for s in everything}) == len({s.handle for s in everything}) == 74
    specs = [s for s in everything if s.family.startswith("BiT")]
    assert len(specs) == 73
    (yardstick,) = [s for s in everything if not s.family.startswith("BiT")]
    assert yardstick.name == "efficientnet-lite0" and yardstick.offline_weights == ("package",)
    by_kind = {
        "feature vectors": [s for s in specs if s.handle.startswith("google/bit/") and s.handle.count("/") == 3],
        "ilsvrc heads": [s for s in specs if "ilsvrc2012_classification" in s.handle],
        "21k heads": [s for s in specs if "imagenet21k_classification" in s.handle],
        "experts": [s for s in specs if s.handle.startswith("google/experts/")],
    }
    assert {k: len(v) for k, v in by_kind.items()} == {
        "feature vectors": 10, "ilsvrc heads": 10, "21k heads": 5, "experts": 48}
    assert all(s.activation == "sigmoid" and s.num_outputs == 21843 and s.labels == "imagenet21k"
               for s in by_kind["21k heads"])
    assert all(s.activation == "softmax" and s.num_outputs == 1000 and s.labels == "ilsvrc2012"
               for s in by_kind["ilsvrc heads"])
    assert all(s.task == "feature_vector" and s.activation == "none" and s.labels is None
               for s in by_kind["feature vectors"] + by_kind["experts"])


@pytest.mark.parametrize(
    "handle, features",
    [("google/bit/m-r50x1/1", 2048), ("google/bit/s-r50x3/1", 6144), ("google/bit/m-r101x1/1", 2048),
     ("google/bit/m-r101x3/1", 6144), ("google/bit/s-r152x4/1", 8192)],
)
def test_feature_sizes_follow_the_width(handle, features):
    assert catalog.get(handle).num_outputs == features


def test_architectures_follow_the_published_depths():
    assert catalog.get("bit-m-r50x1").architecture.units == (3, 4, 6, 3)
    assert catalog.get("bit-m-r101x3").architecture.units == (3, 4, 23, 3)
    assert catalog.get("bit-s-r152x4").architecture.units == (3, 8, 36, 3)
    assert catalog.get("expert-conveyance").architecture.label == "R50x1"


def test_lookup_by_short_name_handle_and_tfhub_url_finds_the_same_entry():
    spec = catalog.get("bit-m-r50x1-in21k")
    assert catalog.get("google/bit/m-r50x1/imagenet21k_classification/1") is spec
    assert catalog.get("https://tfhub.dev/google/bit/m-r50x1/imagenet21k_classification/1") is spec
    assert spec.url == "https://tfhub.dev/google/bit/m-r50x1/imagenet21k_classification/1"
    assert catalog.get("expert-consumer-goods").handle == "google/experts/bit/r50x1/in21k/consumer_goods/1"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match="did you mean bit-m-r50x1-in21k"):
        catalog.get("bit-m-r50x1-in21")


def test_filters_narrow_the_list():
    assert {s.name for s in catalog.list_models("r152x4")} == {
        "bit-s-r152x4", "bit-s-r152x4-ilsvrc2012", "bit-m-r152x4", "bit-m-r152x4-ilsvrc2012", "bit-m-r152x4-in21k"}
    assert len(catalog.list_models("expert-*")) == 48
    assert catalog.list_models("no-such-thing") == []
