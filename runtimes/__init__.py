"""hubedge runtimes: the edge side. Load an exported artifact and call ``predict()``.

    import runtimes
    model = runtimes.load("artifacts/bit-m-r50x1-in21k.tflite.int8.tflite")
    model.top_k(["photo.jpg"])

Importing this package never imports TensorFlow; each adapter imports its own runtime when it is used.
"""

from __future__ import annotations

from pathlib import Path

from runtimes.base import Prediction, Predictor, activate, top_k_from_outputs
from runtimes.errors import HubedgeError, InvalidInputError
from runtimes.manifest import fixed_input_size, model_info, read_manifest
from runtimes.modelinfo import ModelInfo
from runtimes.preprocess import load_image, preprocess

__all__ = [
    "HubedgeError",
    "InvalidInputError",
    "ModelInfo",
    "Prediction",
    "Predictor",
    "activate",
    "load",
    "load_image",
    "preprocess",
    "top_k_from_outputs",
]

DEVICES = ("cpu", "gpu", "npu")


def load(path: str | Path, device: str = "cpu", threads: int | None = None) -> Predictor:
    """Loads an exported artifact with the adapter its manifest names.

    ``threads`` pins the runtime's intra-op threads where the runtime allows it (None: the runtime's default).
    """
    if device not in DEVICES:
        raise InvalidInputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    manifest = read_manifest(path)
    info = model_info(manifest)
    runtime = manifest.get("runtime")
    if runtime == "tf":
        from runtimes.tf_reference import TFReferencePredictor

        return TFReferencePredictor.from_savedmodel(path, info, device, threads)
    raise HubedgeError(f"{path}: no runtime adapter for {runtime!r} in this version of hubedge")
