"""Long passes over images say how far they are, with the time left, and run a chunk at a time
(``hubedge.runtimes.progress``): the FP32 reference, and each verification child."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hubedge.runtimes import progress
from hubedge.runtimes.progress import Progress, predict_in_chunks, time_left


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_quiet_at_first_then_says_the_time_left_at_most_every_so_often():
    said: list[str] = []
    clock = Clock()
    bar = Progress(said.append, "verifying on the cpu", 132, quiet_s=15, every_s=30, clock=clock)
    clock.now += 10
    bar.update(8)  # 10 s in (the model loaded, one chunk run): quiet, as a small model is done before anything is said
    assert said == []
    clock.now += 10
    bar.update(16)  # 8 images in the 10 s since the first count: 116 left at 1.25 s each
    assert said == ["  verifying on the cpu: 16/132 images, about 0:02:25 left"]
    clock.now += 20
    bar.update(24)  # 20 s after the last line: not yet
    clock.now += 10
    bar.update(32)  # 24 images in 40 s: 100 left at 1.67 s each
    assert said[1:] == ["  verifying on the cpu: 32/132 images, about 0:02:47 left"]
    clock.now += 60
    bar.update(132)  # done: the step's own line says so
    assert len(said) == 2
    Progress(None, "quiet", 10, quiet_s=0, every_s=0).update(5)  # no one to tell


def test_the_first_count_alone_is_timed_from_the_start():
    said: list[str] = []
    clock = Clock()
    bar = Progress(said.append, "FP32 reference", 132, quiet_s=15, every_s=30, clock=clock)
    clock.now += 33
    bar.update(32)  # 32 images in 33 s: 100 left at 1.03 s each
    assert said == ["  FP32 reference: 32/132 images, about 0:01:43 left"]


def test_time_left_is_hours_minutes_and_seconds():
    assert time_left(0.4) == "0:00:00" and time_left(75.6) == "0:01:16" and time_left(3 * 3600 + 5) == "3:00:05"
    assert time_left(-3) == "0:00:00"


def test_a_pass_in_chunks_gives_the_outputs_of_one_call_and_counts_what_is_done():
    images = np.arange(20 * 2 * 2 * 3, dtype=np.float32).reshape(20, 2, 2, 3)
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.reshape(len(batch), 12).sum(axis=1, keepdims=True)

    done: list[int] = []
    outputs = predict_in_chunks(predict, images, done.append, size=8)
    np.testing.assert_array_equal(outputs, images.reshape(20, -1).sum(axis=1, keepdims=True))
    assert calls == [8, 8, 4] and done == [8, 16, 20]
    assert predict_in_chunks(predict, images[:0]).shape == (0, 1)  # no images: one call, its empty outputs


@pytest.mark.export
def test_an_export_says_how_far_the_reference_and_each_verification_are(tiny_classifier, tmp_path, monkeypatch):
    """With the quiet period and the interval at zero, every chunk of the FP32 reference is said; verification
    hands the child's count to a Progress of its own (tests/test_isolated.py: the child's count reaches the
    parent). The reference made with progress is the one a one-call pass makes."""
    from hubedge import exporter
    from hubedge.exporter import pipeline

    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    counts: list = []
    real = pipeline.predict_isolated

    def counted(*args, on_done=None, **kwargs):
        counts.append(on_done)
        return real(*args, on_done=on_done, **kwargs)

    monkeypatch.setattr(pipeline, "predict_isolated", counted)
    said: list[str] = []
    exporter.export(str(tiny_classifier.savedmodel_dir), weights="hub", formats=["onnx"], precisions="none",
                    output=tmp_path, progress=said.append)
    lines = [line for line in said if re.fullmatch(r"  .*: \d+/132 images, about \d+:\d\d:\d\d left", line)]
    reference = [int(line.split(": ")[1].split("/")[0]) for line in lines if line.startswith("  FP32 reference: ")]
    assert reference == [32, 64, 96, 128], said  # every chunk but the last, which the step's own line follows
    assert len(counts) == 1 and counts[0] is not None
    said.clear()
    counts[0](64)
    assert said and said[0].startswith("  verifying on the cpu: 64/132 images, about "), said
    images = pipeline.evaluation_set(tiny_classifier.info.input_size).images
    np.testing.assert_array_equal(pipeline.compute_reference(tiny_classifier, images),
                                  tiny_classifier.reference().predict(images))
