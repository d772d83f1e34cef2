"""The one prediction API that every runtime adapter implements.

An adapter only knows how to run a preprocessed float32 NHWC batch (``_run``); this base class owns input
validation, preprocessing, output checks and the turning of logits into labelled scores, so every runtime
behaves the same to its caller.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hubedge.runtimes.errors import HubedgeError, InvalidInputError
from hubedge.runtimes.labels import load_labels
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.preprocess import ImageLike, preprocess

__all__ = ["Prediction", "Predictor", "activate", "fixed_batches", "import_runtime", "in_fixed_batches",
           "top_k_from_outputs"]


def import_runtime(module: str, extra: str) -> Any:
    """Imports an adapter's runtime on first use; a missing one names the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HubedgeError(f"{module.split('.')[0]} is not installed: pip install 'hubedge[{extra}]'") from None


def fixed_batches(images: np.ndarray, size: int) -> list[np.ndarray]:
    """``images`` in chunks of exactly ``size`` (an artifact exported with ``--batch size`` takes no other), the last
    one filled up with copies of its last image."""
    chunks = [images[start : start + size] for start in range(0, len(images), size)]
    if chunks and len(chunks[-1]) < size:
        fill = np.repeat(chunks[-1][-1:], size - len(chunks[-1]), axis=0)
        chunks[-1] = np.concatenate([chunks[-1], fill])
    return chunks


def in_fixed_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, size: int) -> np.ndarray:
    """The outputs of ``run`` on ``images``, fed ``size`` at a time (:func:`fixed_batches`), the fill dropped."""
    return np.concatenate([np.asarray(run(chunk)) for chunk in fixed_batches(images, size)])[: len(images)]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One scored class: its output index, label (first lemma), WordNet ID and score after the activation."""

    index: int
    label: str
    score: float
    wordnet_id: str = ""


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from logits: element-wise sigmoid for multi-label heads, softmax over classes for single-label."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # overflow-free sigmoid
    if activation == "softmax":
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)
    if activation == "none":
        return logits
    raise ValueError(f"unknown activation {activation!r}")


def top_k_from_outputs(outputs: np.ndarray, info: ModelInfo, k: int = 5) -> list[list[Prediction]]:
    """The ``k`` best classes of each row of ``outputs`` (logits, or scores where the graph applied the
    activation), with labels and activated scores."""
    if info.task != "classification":
        raise HubedgeError(f"{info.name} is a feature vector model: it has no classes to rank")
    if k < 1:
        raise InvalidInputError(f"k must be at least 1; got {k}")
    scores = activate(outputs, info.pending_activation)
    labels = load_labels(info.labels) if info.labels else None
    k = min(k, scores.shape[-1])
    result = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:k]
        result.append(
            [
                Prediction(
                    index=int(i),
                    label=labels.short(int(i)) if labels else f"class {int(i)}",
                    score=float(row[i]),
                    wordnet_id=labels.wordnet_ids[int(i)] if labels else "",
                )
                for i in best
            ]
        )
    return result


class Predictor(abc.ABC):
    """Runs one model on one runtime and device.

    Subclasses set ``runtime`` and implement :meth:`_run`; ``fixed_input_size`` is the square side an
    artifact was exported with, or ``None`` when the model takes any size (hub SavedModels).
    """

    runtime: str = ""
    device_status = None  # runtimes.devices.DeviceStatus of the device it runs on, set by adapters

    def __init__(self, info: ModelInfo, device: str = "cpu", fixed_input_size: int | None = None) -> None:
        self.info = info
        self.device = device
        self.fixed_input_size = fixed_input_size

    @property
    def input_size(self) -> int:
        """The square side images are resized to."""
        return self.fixed_input_size or self.info.input_size

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Float32 outputs in the reference's meaning (logits or features), one row per image; scores where the
        artifact's graph applies the activation (``info.activation_in_graph``: a mobile softmax head)."""
        batch = preprocess(images, self.input_size)
        if self.fixed_input_size and batch.shape[1:3] != (self.fixed_input_size, self.fixed_input_size):
            raise InvalidInputError(
                f"this artifact takes {self.fixed_input_size}x{self.fixed_input_size} images; got "
                f"{batch.shape[1]}x{batch.shape[2]} (pass paths or uint8 images to have them resized)"
            )
        outputs = np.asarray(self._run(batch))
        expected = (batch.shape[0], self.info.num_outputs)
        if outputs.shape != expected:
            raise HubedgeError(
                f"{self.runtime} returned outputs of shape {outputs.shape}, expected {expected}: "
                "the artifact does not match its manifest"
            )
        return outputs.astype(np.float32, copy=False)

    def top_k(self, images: ImageLike | Sequence[ImageLike], k: int = 5) -> list[list[Prediction]]:
        """The ``k`` best classes per image, scored with the model's activation (sigmoid or softmax)."""
        return top_k_from_outputs(self.predict(images), self.info, k)

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        """The runtime's own call on a prepared float32 batch of one image, with nothing of hubedge around it
        (no validation, no conversion, no copies beyond the runtime's), so a benchmark can measure exactly
        what ``predict()`` adds on top."""
        raise NotImplementedError(f"{type(self).__name__} offers no direct call")

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Runs a validated float32 NHWC batch in [0, 1] and returns the raw outputs."""
