"""The ONNX Runtime adapter: runs ``.onnx`` artifacts on the CPU execution provider.

Threads are pinned through SessionOptions; the graph is optimized at load (ORT_ENABLE_ALL). The artifact's
batch dimension is dynamic, so a batch runs in one call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Predictor
from runtimes.errors import CorruptModelError, HubedgeError
from runtimes.modelinfo import ModelInfo


class OnnxRuntimePredictor(Predictor):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int | None = None) -> None:
        if device != "cpu":
            raise HubedgeError(f"the ONNX Runtime adapter runs on the CPU in this version; got --device {device}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise HubedgeError("onnxruntime is not installed: pip install 'hubedge[onnx]'") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for unreadable models
            raise CorruptModelError(f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0][:200]}") from None
        self._input = self._session.get_inputs()[0]
        shape = self._input.shape
        super().__init__(info, device, fixed_input_size=shape[1] if isinstance(shape[1], int) else None)
        self.threads = threads

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input.name: batch})[0]
