"""Agreement maths on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hubedge.runtimes.agreement import (
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
    from hubedge.runtimes.base import activate
    from hubedge.runtimes.modelinfo import ModelInfo

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


def _two_class_logits(margins: list[float]) -> np.ndarray:
    """Softmax logits of two classes whose probabilities differ by exactly each margin (class 0 ahead)."""
    p = (1.0 + np.asarray(margins)) / 2.0
    return np.stack([np.log(p), np.log(1.0 - p)], axis=1)


def test_margin_aware_top1_counts_only_images_the_reference_decides_clearly():
    from hubedge.runtimes.agreement import TOP1_MARGIN, margin_top1, reference_margins

    ref = _two_class_logits([TOP1_MARGIN + 1e-6, TOP1_MARGIN - 1e-6, 0.5, 0.9])
    np.testing.assert_allclose(reference_margins(ref, "softmax"), [TOP1_MARGIN + 1e-6, TOP1_MARGIN - 1e-6, 0.5, 0.9])
    flipped_near_tie = ref.copy()
    flipped_near_tie[1] = flipped_near_tie[1, ::-1]  # the image just below the margin flips: not counted
    assert margin_top1(ref, flipped_near_tie) == (1.0, 3)
    assert top1_match(ref, flipped_near_tie) == 0.75
    flipped_clear = ref.copy()
    flipped_clear[0] = flipped_clear[0, ::-1]  # the image just above the margin flips: counted
    assert margin_top1(ref, flipped_clear) == (pytest.approx(2 / 3), 3)
    assert margin_top1(ref, ref, margin=0.95) == (None, 0)  # no image qualifies: no figure, not a perfect one


def test_margin_aware_top1_in_a_sigmoid_head_uses_per_class_probabilities():
    from hubedge.runtimes.agreement import reference_margins

    logits = np.array([[2.0, 0.0, -3.0]])
    expected = 1 / (1 + np.exp(-2.0)) - 0.5
    np.testing.assert_allclose(reference_margins(logits, "sigmoid"), [expected])
    figures = summarize(np.repeat(logits, 2, axis=0), np.repeat(logits, 2, axis=0), "classification", "sigmoid")
    assert figures["top1_margin"] == 1.0 and figures["top1_margin_images"] == 2


def test_the_summary_leaves_margin_aware_top1_out_when_no_image_counts():
    ref = _two_class_logits([0.01, 0.02])
    figures = summarize(ref, ref, "classification", "softmax")
    assert "top1_margin" not in figures and figures["top1_margin_images"] == 0 and figures["top1"] == 1.0
