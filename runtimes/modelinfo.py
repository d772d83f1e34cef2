"""What a runtime must know about a model's inputs and outputs, and nothing about how it was built.

``ModelInfo`` travels with every artifact (in its manifest and, for the hub-form SavedModel, in its
``assets/``), so that a runtime never guesses the input size, the output activation or the label list.
The exporter's catalog entries produce one; the edge side only reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

__all__ = ["Activation", "ModelInfo", "Task"]

Task = Literal["classification", "feature_vector"]
Activation = Literal["sigmoid", "softmax", "none"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Inputs and outputs of one model, as the runtimes see them.

    Attributes:
        name: the catalog's short name (or a name derived from a path for models outside the catalog).
        task: ``classification`` (logits) or ``feature_vector`` (embeddings).
        num_outputs: logits per image or embedding size.
        activation: applied to logits to get scores: ``sigmoid`` for multi-label heads (ImageNet-21k),
            ``softmax`` for single-label heads (ILSVRC-2012), ``none`` for feature vectors.
        labels: name of a bundled label list (``imagenet21k``, ``ilsvrc2012``) or ``None``.
        input_size: the square side the model is usually run at; hub modules accept any size.
        handle: where the model comes from (hub handle, URL or path), for the record.
        activation_in_graph: the artifact's graph already applies ``activation`` (a mobile ``.tflite`` of a
            softmax head, since TFLite Metadata cannot express softmax): its outputs are scores, not logits.
    """

    name: str
    task: Task
    num_outputs: int
    activation: Activation
    labels: str | None
    input_size: int = 224
    handle: str = ""
    activation_in_graph: bool = False

    def __post_init__(self) -> None:
        for name, kind in (("name", str), ("handle", str), ("activation_in_graph", bool)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}; got {getattr(self, name)!r}")
        for name in ("num_outputs", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1 << 20:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.labels is not None and not isinstance(self.labels, str):
            raise ValueError(f"labels must be a label list's name or null; got {self.labels!r}")
        if self.task not in ("classification", "feature_vector"):
            raise ValueError(f"unknown task {self.task!r}")
        if self.activation not in ("sigmoid", "softmax", "none"):
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.task == "feature_vector" and (self.activation != "none" or self.labels is not None):
            raise ValueError("a feature vector has neither an activation nor labels")

    @property
    def pending_activation(self) -> Activation:
        """What still turns this model's outputs into scores: ``none`` where the graph already applied it."""
        return "none" if self.activation_in_graph else self.activation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        if not isinstance(data, dict):
            raise ValueError(f"a model record must be a JSON object; got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})
