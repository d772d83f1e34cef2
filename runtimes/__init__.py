"""hubedge runtimes: the edge side. Load an exported artifact and call ``predict()``.

    from hubedge import runtimes
    model = runtimes.load("artifacts/bit-m-r50x1-in21k.tflite.int8.tflite")
    model.top_k(["photo.jpg"])

Importing this package never imports TensorFlow; each adapter imports its own runtime when it is used.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

from hubedge.runtimes import cpu
from hubedge.runtimes.base import Prediction, Predictor, activate, top_k_from_outputs
from hubedge.runtimes.devices import DEVICES, DeviceUnavailableError
from hubedge.runtimes.errors import CorruptModelError, HubedgeError, InvalidInputError
from hubedge.runtimes.integrity import check_artifact
from hubedge.runtimes.manifest import fixed_input_size, model_info, read_manifest
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.preprocess import load_image, preprocess

__all__ = [
    "CorruptModelError",
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

_WARNED_CPU: set[str] = set()  # artifacts already warned about in this process


def check_cpu_class(path: str | Path, manifest: dict, strict: bool) -> None:
    """Warns once (or, with ``strict``, refuses) when this CPU's class is not one the artifact is right on."""
    right_on = manifest.get("cpu_classes", {}).get("right_on")
    here = cpu.cpu_class()
    if not right_on or cpu.covers(right_on, here):
        return
    not_on = manifest.get("cpu_classes", {}).get("not_on", {})
    why = not_on.get(here) if isinstance(not_on, dict) else None
    advice = f"its manifest says: {why}" if isinstance(why, str) else "re-export it with --int8-cpu portable"
    message = (f"{Path(path).name}'s {manifest.get('precision', '')} recipe is right only on {', '.join(right_on)} "
               f"CPUs and this is {cpu.describe(cpu.machine_record())}: its answers may be wrong here; {advice}")
    if strict:
        raise DeviceUnavailableError(message + " (refused: --strict-device)")
    if str(path) not in _WARNED_CPU:
        _WARNED_CPU.add(str(path))
        warnings.warn(message, stacklevel=3)


# runtime name (as manifests record it) → (module, factory taking path, info, device, threads, strict)
ADAPTERS: dict[str, tuple[str, str]] = {
    "tf": ("hubedge.runtimes.tf_reference", "TFReferencePredictor.from_savedmodel"),
    "litert": ("hubedge.runtimes.litert", "LiteRTPredictor"),
    "onnxruntime": ("hubedge.runtimes.onnx_runtime", "OnnxRuntimePredictor"),
    "openvino": ("hubedge.runtimes.openvino_runtime", "OpenVINOPredictor"),
}


def load(path: str | Path, device: str = "cpu", threads: int | None = None, strict: bool = False,
         check_sha256: bool = True) -> Predictor:
    """Loads an exported artifact with the adapter its manifest names, on ``device`` (cpu, gpu or npu).

    ``threads`` pins the runtime's intra-op threads where the runtime allows it (None: the runtime's default).
    A device that is not present raises DeviceUnavailableError with the reason. Where a runtime would run
    part of the graph on the CPU instead (ONNX Runtime on GPU/NPU), ``strict`` refuses that; otherwise the
    predictor's ``placement`` says how much ran where. On a CPU whose class the artifact's recipe is not right
    on (``cpu_classes.right_on`` in its manifest: a ``--int8-cpu vnni`` artifact on x86 without VNNI), it
    warns once, in one line; ``strict`` refuses. Before any runtime parses it, the artifact (and each companion
    file) must hash to the sha256 its manifest records, so a swapped or damaged file is refused, not run
    (``hubedge.runtimes.integrity``; ``check_sha256=False`` skips that, for a file being built).
    """
    if device not in DEVICES:
        raise InvalidInputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InvalidInputError(f"threads must be at least 1; got {threads}")
    manifest = read_manifest(path)
    if check_sha256:
        check_artifact(path, manifest)
    if device == "cpu":
        check_cpu_class(path, manifest, strict)
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
