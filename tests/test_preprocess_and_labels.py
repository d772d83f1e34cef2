"""The one preprocessing and the bundled label lists."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from hubedge.runtimes.errors import InvalidInputError
from hubedge.runtimes.labels import load_labels
from hubedge.runtimes.preprocess import check_float_batch, load_image, preprocess


def test_paths_become_float32_nhwc_in_unit_range(photos):
    batch = preprocess(photos[:3], 96)
    assert batch.shape == (3, 96, 96, 3) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.05


def test_every_input_kind_gives_the_same_pixels(photos):
    pil = load_image(photos[0])
    array = np.asarray(pil)
    from_path = preprocess(photos[0], 64)
    assert np.array_equal(from_path, preprocess(pil, 64))
    assert np.array_equal(from_path, preprocess(array, 64))
    assert np.array_equal(from_path, preprocess(array[None], 64))
    assert np.array_equal(from_path, preprocess([str(photos[0])], 64))


def test_centre_crop_keeps_the_middle_of_a_wide_image():
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # only the centre square is white
    assert preprocess(wide, 10).min() == 1.0


def test_greyscale_and_rgba_files_become_rgb(tmp_path):
    Image.new("L", (40, 30), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (40, 30), (255, 0, 0, 10)).save(tmp_path / "rgba.png")
    batch = preprocess([tmp_path / "grey.png", tmp_path / "rgba.png"], 16)
    assert batch.shape == (2, 16, 16, 3)
    assert np.allclose(batch[0], 128 / 255) and np.allclose(batch[1, ..., 0], 1.0)


def test_float_batches_pass_through_unchanged():
    batch = np.random.default_rng(0).random((2, 50, 40, 3), dtype=np.float32)
    assert preprocess(batch, 224) is batch


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 8, 8, 3), np.float64), "float32"),
        (np.zeros((8, 8, 3), np.float32), "rank 4"),
        (np.zeros((1, 8, 8, 4), np.float32), "3 channels"),
        (np.zeros((0, 8, 8, 3), np.float32), "empty"),
        (np.full((1, 8, 8, 3), np.nan, np.float32), "NaN"),
        *[(np.where(np.arange(192).reshape(1, 8, 8, 3) == 100, value, 0.5).astype(np.float32), "NaN or infinite")
          for value in (np.nan, np.inf, -np.inf)],  # one bad value among good ones
        (np.full((1, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.int32), "uint8"),
        (np.zeros((8, 8, 4), np.uint8), "3 channels"),
        ([], "no images"),
    ],
)
def test_bad_arrays_get_one_clear_error(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        preprocess(bad, 32)


def test_missing_and_non_image_files_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        load_image(tmp_path / "notes.jpg")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(dtype=hnp.floating_dtypes() | hnp.integer_dtypes(),
                  shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=5)))
def test_any_array_is_either_a_valid_batch_or_an_invalid_input_error(array):
    try:
        batch = preprocess(array, 8)
    except InvalidInputError:
        return
    assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[-1] == 3 and batch.shape[0] > 0
    assert np.isfinite(batch).all() and 0.0 <= batch.min() and batch.max() <= 1.0
    check_float_batch(batch)


def test_label_lists_match_the_published_heads():
    in21k = load_labels("imagenet21k")
    ilsvrc = load_labels("ilsvrc2012")
    assert len(in21k.wordnet_ids) == 21843 and len(ilsvrc.wordnet_ids) == 1000
    assert list(in21k.wordnet_ids) == sorted(in21k.wordnet_ids)
    assert {"n03931044", "n09859684"} <= set(in21k.wordnet_ids)  # the two beyond fall-2011's 21841
    assert ilsvrc.wordnet_ids[281] == "n02123045" and ilsvrc.short(281) == "tabby"
    assert ilsvrc.short(967) == "espresso"
