"""The BiT builder: official weight names, faithful numerics, .npz round trips and seeded conditioning."""

from __future__ import annotations

import numpy as np
import pytest

from hubedge.exporter.sources.bit import GN_EPSILON, WS_EPSILON, BitTwin, GroupNormalization, StandardizedConv2D
from hubedge.exporter.sources.catalog import Architecture
from hubedge.runtimes.errors import CorruptModelError

TINY = Architecture((1, 1, 1, 1), 0.5)


def official_names(units: tuple[int, ...], with_head: bool) -> set[str]:
    """The weight names of big_transfer's checkpoints, written out independently of the builder."""
    names = {"resnet/root_block/standardized_conv2d/kernel", "resnet/group_norm/gamma", "resnet/group_norm/beta"}
    for block, count in enumerate(units, 1):
        for unit in range(1, count + 1):
            prefix = f"resnet/block{block}/unit{unit:02d}"
            for part in "abc":
                names |= {f"{prefix}/{part}/standardized_conv2d/kernel", f"{prefix}/{part}/group_norm/gamma",
                          f"{prefix}/{part}/group_norm/beta"}
            if unit == 1:
                names.add(f"{prefix}/a/proj/standardized_conv2d/kernel")
    if with_head:
        names |= {"resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"}
    return names


def test_r50x1_has_the_official_weight_names_and_shapes():
    twin = BitTwin(Architecture.resnet(50, 1), 21843)
    assert set(twin.weight_names()) == official_names((3, 4, 6, 3), with_head=True)
    weights = twin.get_weights()
    assert weights["resnet/root_block/standardized_conv2d/kernel"].shape == (7, 7, 3, 64)
    assert weights["resnet/block4/unit01/a/proj/standardized_conv2d/kernel"].shape == (1, 1, 1024, 2048)
    assert weights["resnet/block3/unit06/b/standardized_conv2d/kernel"].shape == (3, 3, 256, 256)
    assert weights["resnet/head/conv2d/kernel"].shape == (1, 1, 2048, 21843)
    assert weights["resnet/group_norm/gamma"].shape == (2048,)


def test_feature_vector_twin_has_no_head():
    twin = BitTwin(TINY, None)
    assert set(twin.weight_names()) == official_names((1, 1, 1, 1), with_head=False)
    assert twin.model.output_shape == (None, TINY.feature_size)


def test_group_norm_matches_the_textbook_five_d_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, (2, 5, 7, 64)).astype(np.float32)
    layer = GroupNormalization()
    layer.build(x.shape)
    gamma, beta = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    layer.set_weights([gamma, beta])
    grouped = x.reshape(2, 5, 7, 32, 2).astype(np.float64)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + GN_EPSILON)).reshape(x.shape) * gamma + beta
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=2e-5)


def test_weight_standardization_uses_per_output_channel_moments():
    rng = np.random.default_rng(2)
    layer = StandardizedConv2D(4, 3)
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    layer.build(x.shape)
    kernel = rng.normal(3.0, 2.0, (3, 3, 2, 4)).astype(np.float32)
    layer.set_weights([kernel])
    k = kernel.astype(np.float64)
    standardized = (k - k.mean(axis=(0, 1, 2))) / np.sqrt(k.var(axis=(0, 1, 2)) + WS_EPSILON)
    patches = np.stack([x[0, i:i + 3, j:j + 3].astype(np.float64) for i in range(3) for j in range(3)])
    expected = np.einsum("phwc,hwco->po", patches, standardized).reshape(1, 3, 3, 4)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-4)


def test_npz_round_trip_gives_identical_outputs(tmp_path, photos):
    from hubedge.runtimes.preprocess import preprocess

    source = BitTwin(TINY, 7)
    source.seed(3)
    source.save_npz(tmp_path / "BiT-tiny.npz")
    with np.load(tmp_path / "BiT-tiny.npz") as data:
        assert set(data.files) == official_names((1, 1, 1, 1), with_head=True)
    copy = BitTwin(TINY, 7)
    copy.load_npz(tmp_path / "BiT-tiny.npz")
    images = preprocess(photos[:2], 64)
    assert np.array_equal(source.model(images).numpy(), copy.model(images).numpy())


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    BitTwin(TINY, None).save_npz(tmp_path / "features.npz")
    with pytest.raises(CorruptModelError, match="lacks 2 weights"):
        BitTwin(TINY, 7).load_npz(tmp_path / "features.npz")
    wide = BitTwin(Architecture((1, 1, 1, 1), 1.0), None)
    wide.save_npz(tmp_path / "wide.npz")
    with pytest.raises(CorruptModelError, match="has shape"):
        BitTwin(TINY, None).load_npz(tmp_path / "wide.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CorruptModelError, match="cannot read"):
        BitTwin(TINY, None).load_npz(tmp_path / "junk.npz")


def test_seeding_is_deterministic_and_per_name():
    a, b = BitTwin(TINY, 5), BitTwin(TINY, 5)
    a.seed(0)
    b.seed(0)
    for name, value in a.get_weights().items():
        assert np.array_equal(value, b.get_weights()[name]), name
    other = BitTwin(TINY, 5)
    other.seed(1)
    assert not np.array_equal(a.get_weights()["resnet/head/conv2d/kernel"],
                              other.get_weights()["resnet/head/conv2d/kernel"])
    features = BitTwin(TINY, None)
    features.seed(0)  # the same names get the same values with or without a head
    name = "resnet/block2/unit01/b/standardized_conv2d/kernel"
    assert np.array_equal(features.get_weights()[name], a.get_weights()[name])


def test_seeded_head_is_centred_on_the_calibration_photos():
    twin = BitTwin(TINY, 50)
    from hubedge.exporter.sources import _centring_batches

    recipe = twin.seed(0, centre_on=lambda: _centring_batches(64))
    assert "centred on the mean feature of 8 calibration photos" in recipe
    logits = np.concatenate([twin.model(b).numpy() for b in _centring_batches(64)])
    np.testing.assert_allclose(logits.mean(axis=0), 0.0, atol=1e-4)
