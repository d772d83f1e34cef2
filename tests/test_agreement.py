"""Agreement maths on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtimes.agreement import cosines, sqnr_db, summarize, top1_match, topk_overlap


def test_known_answers():
    ref = np.array([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    out = np.array([[4.0, 5, 3, 2, 0, 1], [0, 1, 2, 3, 4, 5]])
    assert top1_match(ref, out) == 0.5
    assert topk_overlap(ref, out, 5) == pytest.approx((4 / 5 + 1) / 2)
    assert topk_overlap(ref, out, 2) == 1.0
    np.testing.assert_allclose(cosines(ref, out), [53 / 55, 1.0])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.array([[3.0, 4.0]]), np.array([[3.0, 3.0]])) == pytest.approx(10 * math.log10(25 / 1))


def test_summary_per_task():
    ref = np.eye(3)
    figures = summarize(ref, ref * 2, "classification")
    assert figures["top1"] == 1.0 and figures["cosine_min"] == pytest.approx(1.0)
    assert figures["max_abs_diff"] == 1.0
    assert "top1" not in summarize(ref, ref, "feature_vector")


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        top1_match(np.zeros((2, 3)), np.zeros((3, 2)))
