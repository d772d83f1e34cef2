"""The LiteRT adapter: runs ``.tflite`` artifacts with ``ai-edge-litert``.

On the CPU it uses the interpreter with XNNPACK. On a GPU it uses LiteRT's CompiledModel API with the WebGPU
accelerator that the wheel ships (Vulkan on Linux). That is a GPU that LiteRT itself reports: a model it cannot
place wholly on the GPU is refused under ``strict``, and otherwise it runs split, with a warning.

Fixed-batch artifacts (batch 1, the mobile norm) are run image by image; int8 input and output tensors are
quantized and dequantized here with the scale and zero point the model declares, so callers always pass
float32 in [0, 1] and get float32 logits or features back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes.base import Predictor, import_runtime
from hubedge.runtimes.devices import DeviceUnavailableError, require
from hubedge.runtimes.errors import CorruptModelError, HubedgeError
from hubedge.runtimes.manifest import read_manifest
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.native_log import captured_native_log

__all__ = ["LiteRTPredictor"]

QUANTIZED_PRECISIONS = ("int8", "dynamic")  # measured wrong on LiteRT's GPU accelerator (see _GpuModel)
# what LiteRT's log says when the WebGPU accelerator finds no GPU to run on
NO_GPU_SIGNS = ("No adapters found", "Failed to initialize WebGPU", "Couldn't load Vulkan")


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTPredictor(Predictor):
    runtime = "litert"

    def __init__(self, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int | None = None,
                 strict: bool = False) -> None:
        interpreter = import_runtime("ai_edge_litert.interpreter", "tflite")
        self.device_status = require(self.runtime, device)
        try:
            with captured_native_log():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                self._interpreter = interpreter.Interpreter(model_path=str(path), num_threads=threads)
                if device == "cpu":
                    self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise CorruptModelError(f"LiteRT cannot load {path}: {str(error).splitlines()[0][:200]}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = self._input["shape"]
        super().__init__(info, device, fixed_input_size=int(shape[1]))
        self.threads = threads
        self.cpu_fallback: list[str] = []
        self._gpu = _GpuModel(Path(path), strict, read_manifest(path)["precision"]) if device == "gpu" else None
        if self._gpu is not None and not self._gpu.fully_on_gpu:
            self.cpu_fallback = ["ops LiteRT did not place on the GPU"]
            warnings.warn(f"{Path(path).name} on gpu: LiteRT runs part of the graph on the CPU; "
                          "--strict-device refuses such a split", stacklevel=2)

    def _run_one(self, image: np.ndarray) -> np.ndarray:
        values = image[None]
        dtype = self._input["dtype"]
        if dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            values = quantize(values, scale, zero_point, dtype)
        if self._gpu is not None:
            out = self._gpu.run(values, self._output["dtype"])
        else:
            self._interpreter.set_tensor(self._input["index"], values)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output["index"])
        if out.dtype != np.float32:
            scale, zero_point = self._output["quantization"]
            out = dequantize(out, scale, zero_point)
        return out.reshape(-1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._run_one(image) for image in batch])

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        values = batch[:1]
        if self._input["dtype"] != np.float32:
            values = quantize(values, *self._input["quantization"], self._input["dtype"])
        if self._gpu is not None:
            return lambda: self._gpu.run(values, self._output["dtype"])
        interpreter, source, sink = self._interpreter, self._input["index"], self._output["index"]

        def call() -> np.ndarray:
            interpreter.set_tensor(source, values)
            interpreter.invoke()
            return interpreter.get_tensor(sink)

        return call


class _GpuModel:
    """One artifact compiled for LiteRT's GPU accelerator; ``fully_on_gpu`` says whether LiteRT split it.

    fp32 artifacts ask the GPU for fp32 arithmetic (it computes in fp16 unless told otherwise); fp16 artifacts
    let it use fp16, which is what they are for. Quantized artifacts (int8, dynamic) are refused: on an H100
    through Vulkan, LiteRT 2.3's GPU accelerator called them fully accelerated and returned outputs unrelated
    to the CPU's (cosine about 0 for int8, down to -0.03 for dynamic), with or without its quantized-conv
    option.
    """

    def __init__(self, path: Path, strict: bool, precision: str) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.gpu_options import GpuOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import Options

        if precision in QUANTIZED_PRECISIONS:
            raise HubedgeError(f"{path.name} is a quantized ({precision}) artifact, which LiteRT's GPU accelerator "
                               "computes wrongly; run it on the cpu, or export fp16 or fp32 for the gpu")
        gpu_options = GpuOptions(enforce_f32=precision != "fp16")

        def compile_for(accelerators: HardwareAccelerator) -> CompiledModel:
            return CompiledModel.from_file(str(path), options=Options(accelerators, gpu_options=gpu_options))

        with captured_native_log() as log:
            try:
                self._model = compile_for(HardwareAccelerator.GPU)
            except RuntimeError:
                self._model = None
        if self._model is None and any(sign in log.text for sign in NO_GPU_SIGNS):
            raise DeviceUnavailableError(f"litert on gpu: not available here: LiteRT's GPU accelerator found no "
                                         f"GPU ({log.tail(2, NO_GPU_SIGNS)})")
        if self._model is None and strict:
            raise HubedgeError(f"{path} cannot run wholly on LiteRT's GPU accelerator and --strict-device forbids "
                               f"a CPU fallback: {log.tail(2, ('ERROR', 'rror'))}")
        if self._model is None:
            with captured_native_log() as log:
                try:
                    self._model = compile_for(HardwareAccelerator.GPU | HardwareAccelerator.CPU)
                except RuntimeError:
                    raise HubedgeError(f"LiteRT cannot compile {path} for the GPU: "
                                       f"{log.tail(2, ('ERROR', 'rror'))}") from None
        self.fully_on_gpu = self._model.is_fully_accelerated()
        if strict and not self.fully_on_gpu:
            raise HubedgeError(f"{path} cannot run wholly on LiteRT's GPU accelerator and --strict-device forbids "
                               "a CPU fallback")
        self._inputs = self._model.create_input_buffers(0)
        self._outputs = self._model.create_output_buffers(0)
        details = self._model.get_output_tensor_details(next(iter(self._model.get_signature_list())))
        self._output_size = int(np.prod(next(iter(details.values()))["shape"]))

    def run(self, values: np.ndarray, output_dtype: np.dtype) -> np.ndarray:
        self._inputs[0].write(np.ascontiguousarray(values))
        self._model.run_by_index(0, self._inputs, self._outputs)
        return self._outputs[0].read(self._output_size, output_dtype)
