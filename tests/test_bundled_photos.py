"""The bundled photos: every one licensed and described, the split fixed, and no judged photo ever calibrates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from hubedge import calibration_data
from hubedge.exporter.quantize.calibration import build_calibration_set, usable_images
from hubedge.exporter.pipeline import EVALUATION_CROPS, evaluation_set
from hubedge.runtimes.errors import InvalidInputError


def _relative(path):
    return path.relative_to(calibration_data.DIR).as_posix()


def test_every_bundled_photo_has_a_licence_row_and_a_description():
    every = [*calibration_data.photos(), *sorted(calibration_data.EVALUATION_DIR.iterdir())]
    licences = (calibration_data.DIR / "LICENSES.md").read_text()
    described = {line.split("\t")[0] for line in (calibration_data.DIR / "photos.tsv").read_text().splitlines()[1:]}
    assert len(every) == 73 and {_relative(p) for p in every} == described
    for path in every:
        assert f"| {_relative(path)} |" in licences, path.name
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and min(image.size) == 320, path.name


def test_the_split_keeps_its_calibration_photos_and_adds_evaluation_only_ones():
    split = calibration_data.photos()
    held, calibrating = calibration_data.evaluation_photos(), calibration_data.calibration_photos()
    assert len(split) == 38 and len(calibrating) == 29
    assert held[:9] == split[3::4] == calibration_data.held_apart_photos()
    assert set(calibration_data.EVALUATION_DIR.glob("*.jpg")) == set(held[9:]) and len(held) == 44
    assert not set(held) & set(calibrating)
    _, files = usable_images(None)
    assert files == calibrating  # the default calibration folder never yields a judged photo


def test_judged_photos_are_refused_as_calibration_data_wherever_they_sit(tmp_path):
    for photo in calibration_data.evaluation_photos()[-3:]:
        shutil.copy(photo, tmp_path / f"copy-{photo.name}")
    with pytest.raises(InvalidInputError, match="not counting the held-apart verification photos"):
        build_calibration_set(tmp_path, 16)


def test_every_artifact_is_judged_on_every_evaluation_photo_and_its_crops():
    evaluation = evaluation_set(16)
    photos, rows = evaluation.photos_only(np.arange(len(evaluation.images)))
    assert evaluation.views_per_photo == EVALUATION_CROPS + 1 and len(evaluation.images) == 44 * (EVALUATION_CROPS + 1)
    assert list(evaluation.photos) == calibration_data.evaluation_photos() and len(photos) == 44
    assert rows.tolist() == list(range(0, len(evaluation.images), EVALUATION_CROPS + 1))
    assert not set(evaluation.photos) & set(calibration_data.calibration_photos())
