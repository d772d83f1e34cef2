"""The TensorFlow reference adapter: runs a hub-form SavedModel (or a loaded module) in FP32.

This is the only module of ``hubedge.runtimes`` that imports TensorFlow, and only when it is used: edge apps that
run LiteRT, ONNX Runtime or OpenVINO artifacts never pay TensorFlow's import time or size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes.base import Predictor
from hubedge.runtimes.devices import DeviceUnavailableError, require
from hubedge.runtimes.errors import CorruptModelError, HubedgeError
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.progress import REFERENCE_CHUNK_IMAGES, predict_in_chunks

__all__ = ["TFReferencePredictor", "load_savedmodel", "set_threads"]


def load_savedmodel(path: str | Path) -> Callable:
    """Loads a SavedModel directory with ``tf.saved_model.load``; a damaged one raises CorruptModelError."""
    import tensorflow as tf

    directory = Path(path)
    if not (directory / "saved_model.pb").is_file() and not (directory / "saved_model.pbtxt").is_file():
        raise CorruptModelError(f"{directory} is not a SavedModel directory (no saved_model.pb in it)")
    try:
        return tf.saved_model.load(str(directory))
    except Exception as error:  # TF raises many types for damaged files; all mean the same to the user
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptModelError(f"cannot load the SavedModel at {directory}: {first_line[:300]}") from None


def set_threads(threads: int | None, strict: bool = True) -> int | None:
    """Pins TensorFlow's intra-op threads (inter-op to 1); returns what is in force, None for TF's default.

    TF fixes its thread pools when it first runs an op, so a later, different request cannot be honoured:
    with ``strict`` it raises rather than silently running with other settings than asked for; without,
    it returns what is really in force, for the caller to record.
    """
    import tensorflow as tf

    if threads is None:
        return tf.config.threading.get_intra_op_parallelism_threads() or None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads and not strict:
            return current or None
        if current != threads:
            raise HubedgeError(
                f"TensorFlow already runs with {current or 'default'} threads in this process; "
                f"cannot switch to {threads}"
            ) from None
    return threads


class TFReferencePredictor(Predictor):
    """FP32 TensorFlow on the CPU: the reference every exported artifact is compared with."""

    runtime = "tf"

    def __init__(self, module: Callable, info: ModelInfo, device: str = "cpu", threads: int | None = None) -> None:
        if device != "cpu":
            raise DeviceUnavailableError(f"tf on {device}: not available here: the TF reference runs on the CPU by "
                                         "design (it is the FP32 yardstick)")
        super().__init__(info, device)
        self.device_status = require("tf", "cpu")
        self.threads = set_threads(threads)
        self._module = module  # kept alive: functions of a loaded SavedModel die with it

    @classmethod
    def from_savedmodel(
        cls, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int | None = None, strict: bool = False
    ) -> TFReferencePredictor:
        return cls(load_savedmodel(path), info, device, threads)

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        import tensorflow as tf

        images = tf.constant(batch[:1])
        return lambda: self._module(images).numpy()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """A chunk of images at a time (``hubedge.runtimes.progress``): one chunk's activations are held, not the
        whole batch's, and a pass made at once gives the outputs of the same pass made chunk by chunk with
        progress (``hubedge.exporter.pipeline.compute_reference``)."""
        import tensorflow as tf

        return predict_in_chunks(lambda chunk: self._module(tf.constant(chunk)).numpy(), batch,
                                 size=REFERENCE_CHUNK_IMAGES)
