"""Agreement maths on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtimes.agreement import (
    agreement_with_reference,
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


def test_an_in_graph_softmax_is_judged_in_logit_space():
    """A softmax head's probabilities compare with the reference's logits as the logits they came from."""
    from runtimes.base import activate
    from runtimes.modelinfo import ModelInfo

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 10)).astype(np.float32)
    info = ModelInfo("m", "classification", 10, "softmax", None)
    in_graph = ModelInfo("m", "classification", 10, "softmax", None, activation_in_graph=True)
    probabilities = activate(logits, "softmax").astype(np.float32)
    same = agreement_with_reference(logits, probabilities, in_graph)
    assert same["cosine_min"] > 0.99999 and same["top1"] == 1.0 and same["max_abs_diff"] < 1e-5
    noisy = logits + rng.normal(0, 0.5, logits.shape).astype(np.float32)
    from_scores = agreement_with_reference(logits, activate(noisy, "softmax").astype(np.float32), in_graph)
    centred = agreement_with_reference(logits - logits.mean(1, keepdims=True), noisy - noisy.mean(1, keepdims=True), info)
    assert from_scores["cosine_min"] == pytest.approx(centred["cosine_min"], abs=1e-6)
    assert from_scores["top5"] == centred["top5"]
    with pytest.raises(ValueError, match="only a softmax"):
        agreement_with_reference(logits, probabilities, ModelInfo("m", "classification", 10, "sigmoid", None,
                                                                   activation_in_graph=True))


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
