"""The OpenVINO adapter: runs IR artifacts (``.xml`` + ``.bin``) with OpenVINO on its CPU, GPU or NPU plugin.

The inference precision is set explicitly to f32 on CPU and GPU: on CPUs with AVX512_BF16, OpenVINO's default runs
fp32 IRs in bf16, which silently changes results (docs/stack-facts.md, "Runtime settings"). bf16 runs only when the
artifact says so (``rt_info`` hubedge/precision = bf16, exported as a precision of its own), and only on a CPU that
has bf16 arithmetic: elsewhere OpenVINO would quietly run f32, so the load fails instead. Latency hint; threads
through ``INFERENCE_NUM_THREADS``. A model is compiled for the named device alone (no AUTO/HETERO), so it either
runs there wholly or fails to load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes.base import Predictor, fixed_batches, import_runtime, in_fixed_batches
from hubedge.runtimes.contract import rt_info_path
from hubedge.runtimes.devices import DeviceUnavailableError, require
from hubedge.runtimes.errors import CannotCompileError, CorruptModelError, runtime_message
from hubedge.runtimes.modelinfo import ModelInfo

__all__ = ["OpenVINOPredictor", "STATIC_BATCH_ENV", "cpu_has_bf16", "static_batch_enabled"]


STATIC_BATCH_ENV = "HUBEDGE_OV_STATIC_BATCH"  # "0": run single images on the dynamic-batch model (comparisons)


def static_batch_enabled() -> bool:
    return os.environ.get(STATIC_BATCH_ENV, "1") != "0"


def cpu_has_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (AVX512_BF16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _inference_precision(core, model, device: str, name: str) -> str | None:
    """The precision OpenVINO must compute in: f32 unless the artifact is a bf16 one; None on the NPU."""
    path = rt_info_path("precision")
    precision = model.get_rt_info(path).astype(str) if model.has_rt_info(path) else ""
    if precision != "bf16":
        return "f32" if device in ("cpu", "gpu") else None
    if device != "cpu":
        raise DeviceUnavailableError(f"{name} is a bf16 artifact, which OpenVINO runs on the CPU only; "
                                     f"use the fp16 artifact on the {device}")
    if not cpu_has_bf16(core):
        raise DeviceUnavailableError(f"{name} is a bf16 artifact, and this CPU has no bf16 arithmetic (AVX512_BF16 "
                                     "or AMX), so OpenVINO would quietly run it in f32; use the fp32 artifact")
    return "bf16"


class OpenVINOPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int | None = None,
                 strict: bool = False) -> None:
        ov = import_runtime("openvino", "openvino")
        self.device_status = require(self.runtime, device)  # compiled on that device alone: no silent fallback
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and device == "cpu":
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            model = core.read_model(str(path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with long texts
            raise CorruptModelError(f"OpenVINO cannot load {path}: {runtime_message(error)}") from None
        self.inference_precision = _inference_precision(core, model, device, Path(path).name)
        if self.inference_precision:
            config["INFERENCE_PRECISION_HINT"] = self.inference_precision
        self._core, self._model, self._config, self._path, self._device = core, model, config, Path(path), device
        shape = model.input(0).get_partial_shape()
        side = shape[1].get_length() if shape[1].is_static else None
        single = model
        if static_batch_enabled() and not shape[0].is_static and shape[1].is_static and shape[2].is_static:
            single = model.clone()
            single.reshape({single.input(0): [1, *(dim.get_length() for dim in list(shape)[1:])]})
        self._compiled = self._compile(single)
        self._request = self._compiled.create_infer_request()
        self._batched: tuple[Any, Any] | None = None  # the dynamic-batch model, compiled on first use
        super().__init__(info, device, fixed_input_size=side)
        self.threads = threads

    def _compile(self, model) -> Any:
        try:
            return self._core.compile_model(model, self.device_status.backend, self._config)
        except Exception as error:  # it was read: the file is sound, and this CPU or device is what it cannot take
            raise CannotCompileError(f"OpenVINO read {self._path.name} but cannot compile it for {self._where()}: "
                                     f"{runtime_message(error)}") from None

    def _where(self) -> str:
        from hubedge.runtimes.cpu import cpu_class

        return f"this CPU ({cpu_class()})" if self._device == "cpu" else f"the {self._device}"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One image runs on a model compiled for batch 1: a static shape lets the CPU plugin pick faster kernels
        for it, most of all in bf16 (``benchmarks/records/settings-figures.md``). Larger batches
        run on the artifact's dynamic-batch model, compiled the first time one comes; a fixed-batch artifact
        (``--batch N``) takes N images a call, the last call filled up."""
        dynamic = self._compiled.input(0).get_partial_shape()[0].is_dynamic
        if dynamic or (len(batch) == 1 and self.fixed_batch in (None, 1)):
            return self._infer(self._compiled, self._request, batch)
        if self.fixed_batch is not None:  # --batch N: N images a call
            return in_fixed_batches(lambda chunk: self._infer(self._compiled, self._request, chunk), batch,
                                    self.fixed_batch)
        if self._batched is None:
            compiled = self._compile(self._model)
            self._batched = (compiled, compiled.create_infer_request())
        return self._infer(*self._batched, batch)

    def _infer(self, compiled: Any, request: Any, batch: np.ndarray) -> np.ndarray:
        """A dynamic-batch model compiles its kernels for the shape that first comes: a kernel this CPU lacks then
        fails here, not at compile time (OpenVINO's ARM plugin on cores without dot product, docs/arm64.md)."""
        try:
            return np.asarray(request.infer({0: batch})[compiled.output(0)])
        except Exception as error:  # inputs were checked before: what fails here is the runtime on this CPU
            raise CannotCompileError(f"OpenVINO compiled {self._path.name} but cannot run it on {self._where()}: "
                                     f"{runtime_message(error)}") from None

    @property
    def fixed_batch(self) -> int | None:
        """The batch the artifact was exported with (``--batch N``), or None for a dynamic one."""
        size = self._model.input(0).get_partial_shape()[0]
        return size.get_length() if size.is_static else None

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        """One image; a fixed-batch artifact's call runs its whole batch (that image and copies)."""
        feed = {0: np.ascontiguousarray(fixed_batches(batch[:1], self.fixed_batch or 1)[0])}
        output = self._compiled.output(0)
        return lambda: self._request.infer(feed)[output]
