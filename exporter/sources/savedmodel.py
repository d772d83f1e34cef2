"""Saving models in the form TF Hub publishes them, so ``hub.load`` and ``hub.KerasLayer`` take them as is.

A TF2 "reusable SavedModel": a ``__call__`` (and ``serving_default`` signature) from float32
``[batch, height, width, 3]`` in [0, 1] to logits or features, plus the ``variables``,
``trainable_variables`` and ``regularization_losses`` attributes that ``hub.KerasLayer`` reads. hubedge adds
``assets.extra/hubedge_model.json`` (the model's ModelInfo and weight source), which TensorFlow ignores and
hubedge reads back, so a saved twin knows what it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from hubedge.exporter.fsutil import atomic_path
from hubedge.runtimes.errors import CorruptModelError
from hubedge.runtimes.modelinfo import ModelInfo

INFO_FILE = Path("assets.extra") / "hubedge_model.json"


def save_hub_module(model: keras.Model, info: ModelInfo, directory: Path, weights: dict[str, Any]) -> Path:
    """Saves ``model`` as a hub-form SavedModel at ``directory`` (atomically) with its ModelInfo."""
    module = tf.__internal__.tracking.AutoTrackable()
    module._model = model

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def call(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    module.__call__ = call
    module.variables = list(model.variables)
    module.trainable_variables = list(model.trainable_variables)
    module.regularization_losses = []
    with atomic_path(directory, directory=True) as temp:
        tf.saved_model.save(module, str(temp), signatures={"serving_default": call})
        write_module_info(temp, info, weights)
    return directory


def write_module_info(directory: Path, info: ModelInfo, weights: dict[str, Any]) -> None:
    path = directory / INFO_FILE
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"model": info.to_dict(), "weights": weights}, indent=2) + "\n", encoding="utf-8")


def read_module_info(directory: Path) -> dict[str, Any] | None:
    """The hubedge record of a SavedModel directory, or None for SavedModels made elsewhere."""
    path = directory / INFO_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        ModelInfo.from_dict(record["model"])
        return record
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptModelError(f"{path} is damaged ({error}); delete it to have the model inspected instead") from None
