"""The ONNX Runtime adapter: CPU execution provider, CUDA/TensorRT on GPUs, the QNN HTP on NPUs.

Threads are pinned through SessionOptions; the graph is optimized at load (ORT_ENABLE_ALL) and, on the CPU,
the optimized graph is cached (``$HUBEDGE_CACHE_DIR/ort-optimized``) so later loads skip the optimizer. On a GPU or
NPU, ONNX Runtime silently runs what the accelerator cannot take on the CPU, and ``get_providers()`` lists
the accelerator either way (PITFALLS.md). So this adapter either forbids that fallback (``strict``: the
session fails instead) or measures it with one profiled run and reports it in ``placement``.
The QNN HTP needs static shapes: the artifact's ``batch`` dimension is pinned to 1 there.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import Predictor, import_runtime
from runtimes.cache import cache_dir
from runtimes.devices import QNN_EP, DeviceUnavailableError, require
from runtimes.errors import CorruptModelError, HubedgeError
from runtimes.modelinfo import ModelInfo
from runtimes.native_log import captured_native_log

BATCH_DIM = "batch"  # the exporter names the dynamic batch dimension so runtimes can pin it


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        return ""


def optimized_model_path(path: Path, version: str) -> Path | None:
    """Where the CPU-optimized graph of an artifact is cached, keyed by its content, ONNX Runtime and the CPU.

    ORT_ENABLE_ALL rewrites layouts for the CPU it runs on, so a saved optimized graph is only valid for the
    same processor and ONNX Runtime version (ONNX Runtime's documentation on offline optimization).
    """
    try:
        with open(path, "rb") as artifact:  # the file itself, not its manifest: a changed file misses the cache
            digest = hashlib.file_digest(artifact, "sha256").hexdigest()
    except OSError:
        return None
    machine = hashlib.sha256(f"{platform.machine()}|{_cpu_model()}".encode()).hexdigest()[:8]
    return cache_dir() / "ort-optimized" / f"{digest[:24]}-ort{version}-{machine}.onnx"


BOUNDARY_OPS = ("QuantizeLinear", "DequantizeLinear")  # float I/O ⇄ the accelerator's integer graph


def _profile_placement(session, feed: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """The op of every kernel of one profiled run, by execution provider (a fused partition is one kernel)."""
    session.run(None, feed)
    path = session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)
    kernels: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and args.get("provider"):
            kernels[args["provider"]][event["name"]] = args.get("op_name", "?")
    return {provider: list(ops.values()) for provider, ops in kernels.items()}


def _preload_cuda_libraries(ort) -> None:
    """Loads CUDA and cuDNN from the ``nvidia-*`` pip packages, where onnxruntime-gpu's extras put them.

    Those libraries are not on the loader's path; without this the CUDA EP fails to start and ONNX Runtime
    quietly runs on the CPU. Libraries already on the path (a system CUDA) make it a no-op.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with captured_native_log(), contextlib.redirect_stdout(io.StringIO()):  # it prints what it misses
            try:
                preload()
            except (OSError, RuntimeError):
                pass  # a missing library shows as the EP failing to start, reported below


class OnnxRuntimePredictor(Predictor):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, info: ModelInfo, device: str = "cpu", threads: int | None = None,
                 strict: bool = False) -> None:
        ort = import_runtime("onnxruntime", "onnx")
        self.device_status = require(self.runtime, device)
        ort.set_default_logger_severity(3)  # plugin EPs log warnings about features of other platforms
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers: list[str] | None = ["CPUExecutionProvider"]
        self.pinned_batch = device == "npu"
        if device == "gpu":  # strict: the accelerator alone (ORT refuses a CPU EP beside disabled CPU fallback)
            providers = [self.device_status.backend] + ([] if strict else ["CPUExecutionProvider"])
            _preload_cuda_libraries(ort)
        elif device == "npu":
            providers = None
            options.add_provider_for_devices([d for d in ort.get_ep_devices() if d.ep_name == QNN_EP],
                                             {"backend_type": "htp"})
            options.add_free_dimension_override_by_name(BATCH_DIM, 1)
        profile = device != "cpu" and not strict
        if device != "cpu" and strict:
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"hubedge-ort-{os.getpid()}")
        source, cached, fresh = str(path), None, None
        if device == "cpu":
            cached = optimized_model_path(Path(path), ort.__version__)
        if cached is not None and cached.is_file():
            source = str(cached)  # already optimized for this CPU: skip the optimizer at load
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        elif cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fresh = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            options.optimized_model_filepath = str(fresh)
        self.optimized_cache = source if source != str(path) else None
        try:
            self._session = ort.InferenceSession(source, options, providers=providers)
            if fresh is not None and fresh.is_file():
                os.replace(fresh, cached)
        except Exception as error:  # ORT raises its own exception types for unreadable or unplaceable models
            text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            if device != "cpu" and strict:
                raise HubedgeError(f"{path} cannot run wholly on the {device} ({self.device_status.backend}) "
                                   f"and --strict-device forbids a CPU fallback: {text}") from None
            if device != "cpu":
                hint = "; export --format qnn for the QNN HTP" if device == "npu" else ""
                raise HubedgeError(f"the {device} ({self.device_status.backend}) cannot run {path}: {text}{hint}") \
                    from None
            raise CorruptModelError(f"ONNX Runtime cannot load {path}: {text}") from None
        finally:
            if fresh is not None:
                fresh.unlink(missing_ok=True)
        if device == "gpu" and self.device_status.backend not in self._session.get_providers():
            # ONNX Runtime drops an EP that cannot start (no driver, no CUDA libraries) and runs on the CPU
            raise DeviceUnavailableError(f"onnxruntime on gpu: not available here: {self.device_status.backend} "
                                         "did not start (no NVIDIA driver, or CUDA/cuDNN libraries not found: "
                                         "pip install 'onnxruntime-gpu[cuda,cudnn]')")
        self._input = self._session.get_inputs()[0]
        shape = self._input.shape
        super().__init__(info, device, fixed_input_size=shape[1] if isinstance(shape[1], int) else None)
        self.threads = threads
        self.placement: dict[str, int] = {}
        self.cpu_fallback: list[str] = []
        if profile:
            side = self.input_size
            ops = _profile_placement(self._session, {self._input.name: np.zeros((1, side, side, 3), np.float32)})
            self.placement = {provider: len(names) for provider, names in ops.items()}
            cpu_ops = ops.get("CPUExecutionProvider", [])
            # quantizing the float input and dequantizing the output stay on the CPU by design of the QNN EP
            self.cpu_fallback = [op for op in cpu_ops if op not in BOUNDARY_OPS or device != "npu"]
            if self.cpu_fallback:
                warnings.warn(f"{Path(path).name} on {device}: {len(self.cpu_fallback)} of "
                              f"{sum(self.placement.values())} kernels run on the CPU, not the "
                              f"{self.device_status.backend} ({', '.join(sorted(set(self.cpu_fallback)))}); "
                              "--strict-device refuses such a split", stacklevel=2)

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        feed = {self._input.name: np.ascontiguousarray(batch[:1])}
        return lambda: self._session.run(None, feed)[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.pinned_batch or (isinstance(self._input.shape[0], int) and self._input.shape[0] == 1):
            return np.concatenate([self._session.run(None, {self._input.name: image[None]})[0] for image in batch])
        return self._session.run(None, {self._input.name: batch})[0]
