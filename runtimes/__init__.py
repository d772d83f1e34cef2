"""hubedge runtimes: the edge side. Load an exported artifact and call ``predict()``.

    import runtimes
    model = runtimes.load("artifacts/bit-m-r50x1-in21k.tflite.int8.tflite")
    model.top_k(["photo.jpg"])

Importing this package never imports TensorFlow; each adapter imports its own runtime when it is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from runtimes.base import Prediction, Predictor, activate, top_k_from_outputs
from runtimes.devices import DEVICES, DeviceUnavailableError
from runtimes.errors import CorruptModelError, HubedgeError, InvalidInputError
from runtimes.manifest import fixed_input_size, model_info, read_manifest
from runtimes.modelinfo import ModelInfo
from runtimes.preprocess import load_image, preprocess

__all__ = [
    "DeviceUnavailableError",
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

# runtime name (as manifests record it) → (module, factory taking path, info, device, threads, strict)
ADAPTERS: dict[str, tuple[str, str]] = {
    "tf": ("runtimes.tf_reference", "TFReferencePredictor.from_savedmodel"),
    "litert": ("runtimes.litert", "LiteRTPredictor"),
    "onnxruntime": ("runtimes.onnx_runtime", "OnnxRuntimePredictor"),
    "openvino": ("runtimes.openvino_runtime", "OpenVINOPredictor"),
}


def load(path: str | Path, device: str = "cpu", threads: int | None = None, strict: bool = False) -> Predictor:
    """Loads an exported artifact with the adapter its manifest names, on ``device`` (cpu, gpu or npu).

    ``threads`` pins the runtime's intra-op threads where the runtime allows it (None: the runtime's default).
    A device that is not present raises DeviceUnavailableError with the reason. Where a runtime would run
    part of the graph on the CPU instead (ONNX Runtime on GPU/NPU), ``strict`` refuses that; otherwise the
    predictor's ``placement`` says how much ran where.
    """
    if device not in DEVICES:
        raise InvalidInputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InvalidInputError(f"threads must be at least 1; got {threads}")
    manifest = read_manifest(path)
    info = model_info(manifest)
    runtime = manifest.get("runtime")
    if runtime not in ADAPTERS:
        raise HubedgeError(f"{path}: no runtime adapter for {runtime!r} in this version of hubedge")
    module_name, factory_name = ADAPTERS[runtime]
    factory = importlib.import_module(module_name)
    for attribute in factory_name.split("."):
        factory = getattr(factory, attribute)
    predictor = factory(path, info, device, threads, strict)
    expected = fixed_input_size(manifest)
    if predictor.fixed_input_size not in (None, expected):
        raise CorruptModelError(
            f"{path} takes {predictor.fixed_input_size}px images but its manifest says {expected}px; re-export it"
        )
    return predictor
