"""How closely an artifact's outputs follow the FP32 reference on the same preprocessed images.

Pure numpy, shared by export verification and the benchmarks. Each function takes ``reference`` and
``output`` as ``[images, values]`` arrays (logits or features).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SUMMARY_KEYS", "TOP1_MARGIN", "agreement_with_reference", "cosines", "knn_agreement", "label_set_f1",
    "margin_top1", "reference_margins", "sqnr_db", "summarize", "top1_match", "topk_overlap"]


def _pair(reference: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, out = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    if ref.shape != out.shape or ref.ndim != 2:
        raise ValueError(f"reference {ref.shape} and output {out.shape} must be equal [images, values] arrays")
    return ref, out


def top1_match(reference: np.ndarray, output: np.ndarray) -> float:
    """Share of images whose best class is the same."""
    ref, out = _pair(reference, output)
    return float(np.mean(ref.argmax(axis=1) == out.argmax(axis=1)))


# Margin-aware top-1 leaves out images whose FP32 best class leads the runner-up by less than this much
# probability: there a flip says which of two near-tied classes won, not whether the artifact is wrong. Chosen
# from EfficientNet-Lite0's flips (benchmarks/records/accuracy-aware-int8.md): 12-bit weights flip an image at
# margin 0.004, int8 artifacts flip near ties below 0.05 and, rarely, an image at 0.11-0.12 (real quantization
# error). 0.05 leaves out the first group and keeps the second.
TOP1_MARGIN = 0.05


def reference_margins(reference: np.ndarray, activation: str) -> np.ndarray:
    """Each image's FP32 top-1 probability minus its top-2 probability, in the head's own probability space
    (softmax across classes; a sigmoid head's per-class probabilities)."""
    ref = np.asarray(reference, np.float64)
    if ref.ndim != 2 or ref.shape[1] < 2:
        raise ValueError(f"margins need [images, classes] logits with at least two classes; got {ref.shape}")
    if activation == "sigmoid":
        probabilities = 1.0 / (1.0 + np.exp(-ref))
    else:
        shifted = np.exp(ref - ref.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    best_two = np.sort(probabilities, axis=1)[:, -2:]
    return best_two[:, 1] - best_two[:, 0]


def margin_top1(reference: np.ndarray, output: np.ndarray, activation: str = "softmax",
                margin: float = TOP1_MARGIN) -> tuple[float | None, int]:
    """Top-1 agreement over the images whose reference top-1 leads its top-2 by at least ``margin``
    (:func:`reference_margins`), and how many images that is; ``None`` when no image qualifies."""
    ref, out = _pair(reference, output)
    counted = reference_margins(ref, activation) >= margin
    if not counted.any():
        return None, 0
    same = ref.argmax(axis=1) == out.argmax(axis=1)
    return float(np.mean(same[counted])), int(counted.sum())


def topk_overlap(reference: np.ndarray, output: np.ndarray, k: int = 5) -> float:
    """Mean of |top-k(ref) ∩ top-k(out)| / k over images."""
    ref, out = _pair(reference, output)
    k = min(k, ref.shape[1])
    best_ref = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    best_out = np.argsort(-out, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(best_ref, best_out)]))


def cosines(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image's output with its reference (1.0 where both are zero)."""
    ref, out = _pair(reference, output)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(dots == 0, 1.0, 0.0))


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖ref‖² / ‖ref − out‖²) in dB; inf when identical."""
    ref, out = _pair(reference, output)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


# the figures a record keeps
SUMMARY_KEYS = ("cosine_min", "cosine", "top1", "top1_margin", "top5", "sqnr_db", "max_abs_diff")


def summarize(reference: np.ndarray, output: np.ndarray, task: str, activation: str = "none") -> dict[str, float]:
    """The agreement figures for one task: classification adds top-1, margin-aware top-1 (``top1_margin``, over
    the ``top1_margin_images`` images whose reference leads by at least :data:`TOP1_MARGIN`; absent when none
    does) and top-5 (and, for sigmoid heads, the F1 of the above-threshold label sets); feature vectors add
    k-nearest-neighbour agreement."""
    ref, out = _pair(reference, output)
    cos = cosines(ref, out)
    figures = {
        "images": int(ref.shape[0]),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "sqnr_db": sqnr_db(ref, out),
        "max_abs_diff": float(np.max(np.abs(ref - out))),
    }
    if task == "classification":
        top1_margin, counted = margin_top1(ref, out, activation)
        figures = {"top1": top1_match(ref, out),
                   **({"top1_margin": top1_margin} if top1_margin is not None else {}),
                   "top1_margin_images": counted, "top5": topk_overlap(ref, out, 5), **figures}
        if activation == "sigmoid":
            figures["label_f1"] = label_set_f1(ref, out)
    elif ref.shape[0] > 1:
        figures["knn3"] = knn_agreement(ref, out, 3)
    return figures


def agreement_with_reference(reference_logits: np.ndarray, output: np.ndarray, info) -> dict[str, float]:
    """:func:`summarize` of an artifact's outputs against the FP32 reference's logits, always in logit space.

    Where the artifact's graph applies its softmax itself (``info.activation_in_graph``: a mobile softmax
    head), its probabilities are turned back into logits first, so every artifact of a model is judged in one
    space against the same floors. A softmax fixes its logits only up to a per-image constant, so both sides
    are then compared centred (each row minus its mean), which leaves top-k unchanged."""
    if info.activation_in_graph:
        if info.activation != "softmax":
            raise ValueError(f"only a softmax is ever applied in an artifact's graph, not {info.activation!r}")
        reference_logits, output = _centred(reference_logits), _centred(_log(output))
    return summarize(reference_logits, output, info.task, info.activation)


def _log(probabilities: np.ndarray) -> np.ndarray:
    """``log p``: a softmax's logits up to a per-row constant; a probability that underflowed to 0 stands at
    the smallest positive float32."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float32).tiny, 1.0))


def _centred(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return (values - values.mean(axis=-1, keepdims=True)).astype(np.float32)


def label_set_f1(reference: np.ndarray, output: np.ndarray, threshold: float = 0.5) -> float:
    """Mean F1 between the label sets scoring above ``threshold`` after a sigmoid (multi-label heads).

    An image where neither side has a label above the threshold counts as full agreement.
    """
    ref, out = _pair(reference, output)
    logit = np.log(threshold / (1.0 - threshold))  # sigmoid(x) > t  ⇔  x > logit(t)
    scores = []
    for r, o in zip(ref > logit, out > logit):
        both, either = int(np.sum(r & o)), int(np.sum(r)) + int(np.sum(o))
        scores.append(1.0 if either == 0 else 2.0 * both / either)
    return float(np.mean(scores))


def knn_agreement(reference: np.ndarray, output: np.ndarray, k: int = 3) -> float:
    """Mean overlap of each embedding's k nearest neighbours (cosine) within the set, reference vs output."""
    ref, out = _pair(reference, output)
    k = min(k, ref.shape[0] - 1)
    if k < 1:
        raise ValueError("k-nearest-neighbour agreement needs at least two embeddings")

    def neighbours(x: np.ndarray) -> np.ndarray:
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(neighbours(ref), neighbours(out))]))
