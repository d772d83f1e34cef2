"""Agreement maths on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtimes.agreement import (
    cosines,
    knn_agreement,
    label_set_f1,
    sqnr_db,
    summarize,
    top1_match,
    topk_overlap,
)


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


def test_label_set_f1_known_answers():
    ref = np.array([[2.0, 2.0, -2.0], [-1.0, -1.0, -1.0]])
    out = np.array([[2.0, -2.0, -2.0], [-1.0, -1.0, -1.0]])
    # image 0: {0,1} vs {0} → F1 = 2·1/3; image 1: nothing above 0.5 on either side → 1
    assert label_set_f1(ref, out) == pytest.approx((2 / 3 + 1) / 2)
    assert label_set_f1(ref, out, threshold=0.99) == 1.0


def test_knn_agreement_known_answers():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert knn_agreement(ref, ref, 1) == 1.0
    swapped = ref[[2, 3, 0, 1]]  # a permutation that keeps the pairs as pairs
    assert knn_agreement(ref, swapped, 1) == 1.0
    broken = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # pairs torn apart
    assert knn_agreement(ref, broken, 1) == 0.0
    assert "knn3" in summarize(ref, ref, "feature_vector")
