"""The LiteRT adapter: runs ``.tflite`` artifacts with ``ai-edge-litert``'s interpreter (XNNPACK on CPU, the
GPU delegate where its library can be loaded).

Fixed-batch artifacts (batch 1, the mobile norm) are run image by image; int8 input and output tensors are
quantized and dequantized here with the scale and zero point the model declares, so callers always pass
float32 in [0, 1] and get float32 logits or features back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Predictor, import_runtime
from runtimes.devices import litert_gpu_delegate, require
from runtimes.errors import CorruptModelError
from runtimes.modelinfo import ModelInfo


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
        delegates = [litert_gpu_delegate()] if device == "gpu" else None
        try:
            self._interpreter = interpreter.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise CorruptModelError(f"LiteRT cannot load {path}: {str(error).splitlines()[0][:200]}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = self._input["shape"]
        super().__init__(info, device, fixed_input_size=int(shape[1]))
        self.threads = threads

    def _run_one(self, image: np.ndarray) -> np.ndarray:
        values = image[None]
        dtype = self._input["dtype"]
        if dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            values = quantize(values, scale, zero_point, dtype)
        self._interpreter.set_tensor(self._input["index"], values)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        if out.dtype != np.float32:
            scale, zero_point = self._output["quantization"]
            out = dequantize(out, scale, zero_point)
        return out.reshape(-1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._run_one(image) for image in batch])
