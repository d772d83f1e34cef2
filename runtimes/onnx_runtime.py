"""The ONNX Runtime adapter: CPU execution provider, CUDA/TensorRT on GPUs, the QNN HTP on NPUs.

Threads are pinned through SessionOptions; the graph is optimized at load (ORT_ENABLE_ALL) and, on the CPU, the
optimized graph is cached (``$HUBEDGE_CACHE_DIR/ort-optimized``) so later loads skip the optimizer. For a quantized
artifact the first CPU load also tries the graph without ONNX Runtime's ``NhwcTransformer`` and keeps whichever
layout runs faster on this CPU (see :func:`_choose_cpu_layout`). On a GPU or NPU, ONNX Runtime silently runs what
the accelerator cannot take on the CPU, and ``get_providers()`` lists the accelerator either way
(docs/stack-facts.md, "Runtime settings"). So this adapter either forbids that fallback (``strict``: the session
fails instead) or measures it with one profiled run and reports it in ``placement``.
The QNN HTP needs static shapes: the artifact's ``batch`` dimension is pinned to 1 there.
An ``.ort`` file (ONNX Runtime's own format) was optimized when it was written and is loaded as it is.
On x86 CPUs without VNNI, ONNX Runtime's uint8 × int8 kernels saturate (``VPMADDUBSW``): int8 artifacts
there run with ``session.x64quantprecision=1``, ONNX Runtime's exact uint8 × uint8 path. It is set on those
CPUs only, because on VNNI CPUs it changes nothing in the results and costs time (docs/portable-int8.md).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes import cpu
from hubedge.runtimes.base import Predictor, fixed_batches, import_runtime, in_fixed_batches
from hubedge.runtimes.cache import cache_dir
from hubedge.runtimes.contract import BATCH_DIM, ONNX_DATA_SUFFIX, metadata_key
from hubedge.runtimes.devices import QNN_EP, DeviceUnavailableError, require
from hubedge.runtimes.errors import CorruptModelError, HubedgeError
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.native_log import captured_native_log

__all__ = ["OnnxRuntimePredictor", "cpu_session_config"]



# ONNX Runtime's exact uint8 × uint8 integer kernels instead of the uint8 × int8 ones that saturate without VNNI
PRECISE_INT8_CONFIG = {"session.x64quantprecision": "1"}


PRECISE_INT8_ENV = "HUBEDGE_ORT_PRECISE_INT8"  # "0": leave the saturating kernels on (to show what it fixes)


def cpu_session_config() -> dict[str, str]:
    """The session config entries this CPU class needs for exact int8 arithmetic (none where it is exact)."""
    if os.environ.get(PRECISE_INT8_ENV, "1") == "0":
        return {}
    return dict(PRECISE_INT8_CONFIG) if cpu.cpu_class() == cpu.X86_NO_VNNI else {}


ORT_FORMAT_SUFFIX = ".ort"  # ONNX Runtime's own format (exporter.formats.ort): loaded by its suffix, not re-optimized
LAYOUT_TRIAL_ENV = "HUBEDGE_ORT_LAYOUT_TRIAL"  # "0": keep ONNX Runtime's default layout (for comparisons)
QUANTIZED_PRECISIONS = ("int8",)  # what the exporter writes to metadata_props[metadata_key("precision")]
LAYOUT_ALTERNATIVE = ("NhwcTransformer",)  # disabled: quantized convs stay NCHW, as the ONNX graph has them
LAYOUT_MIN_GAIN = 0.10  # the alternative must be this much faster; below it timing noise could decide


def layout_trial_enabled() -> bool:
    return os.environ.get(LAYOUT_TRIAL_ENV, "1") != "0"


def optimized_model_path(path: Path, version: str) -> Path | None:
    """Where the CPU-optimized graph of an artifact is cached, keyed by its content, ONNX Runtime and the CPU.

    ORT_ENABLE_ALL rewrites layouts and integer weights for the CPU it runs on, so a saved optimized graph is only
    valid for the same instruction set and ONNX Runtime version (ONNX Runtime's documentation on offline
    optimization). The key holds the features CPUID reports, not ``/proc/cpuinfo``'s model name, which an
    emulated CPU shares with its host.
    """
    try:
        with open(path, "rb") as artifact:  # the file itself, not its manifest: a changed file misses the cache
            digest = hashlib.file_digest(artifact, "sha256").hexdigest()
    except OSError:
        return None
    identity = f"{platform.machine()}|{cpu.cpu_model()}|{','.join(cpu.features())}|{sorted(cpu_session_config().items())}"
    machine = hashlib.sha256(identity.encode()).hexdigest()[:8]
    policy = "" if layout_trial_enabled() else "-default-layout"
    return cache_dir() / "ort-optimized" / f"{digest[:24]}-ort{version}-{machine}{policy}.onnx"


def _layout_record(cached: Path) -> Path:
    return cached.with_suffix(".layout.json")


def _read_layout_record(cached: Path) -> dict[str, Any]:
    """What the first load chose for a cached graph (empty for caches written before the record existed)."""
    try:
        return json.loads(_layout_record(cached).read_text())
    except (OSError, ValueError):
        return {}


def _median_ms(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def _choose_cpu_layout(ort, path: str, threads: int | None, target: Path) -> dict[str, Any]:
    """Optimizes ``path`` for this CPU into ``target``; for a quantized model, in the faster of two layouts.

    ONNX Runtime's NhwcTransformer turns quantized convs into NHWC kernels and its transpose optimizer then
    moves the float ops between them into NHWC too. That pays for conv-only stacks (EfficientNet-Lite0 int8)
    but not when those ops are normalization statistics, whose ReduceMean over H and W is slow in NHWC (BiT's
    GroupNorm; figures: ``benchmarks/records/onnx-int8-layout.md``). Which wins
    depends on the model and the CPU, so the first load times both (spinning off, alternating blocks, medians)
    and the saved graph fixes the choice for later loads. Returns the choice and the timings.
    """
    def optimize(disabled: tuple[str, ...], output: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # an idle pool must not spin
        for key, value in cpu_session_config().items():
            options.add_session_config_entry(key, value)
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.optimized_model_filepath = str(output)
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled))

    default = optimize((), target)
    precision = default.get_modelmeta().custom_metadata_map.get(metadata_key("precision"), "")
    if precision not in QUANTIZED_PRECISIONS or not layout_trial_enabled():
        return {"layout": "default"}
    alternative_path = target.with_name(target.name + ".alt")
    try:
        alternative = optimize(LAYOUT_ALTERNATIVE, alternative_path)
        model_input = default.get_inputs()[0]
        side = model_input.shape[1] if isinstance(model_input.shape[1], int) else 224
        batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else 1  # one image, or its fixed batch
        feed = {model_input.name: np.random.default_rng(0).random((batch, side, side, 3), np.float32)}
        sessions = {"default": default, "nchw": alternative}
        timings: dict[str, list[float]] = {name: [] for name in sessions}
        for session in sessions.values():
            session.run(None, feed)  # first-run allocations
        for _ in range(3):
            for name, session in sessions.items():
                timings[name].append(_median_ms(lambda session=session: session.run(None, feed), 3))
        median = {name: round(float(np.median(values)), 2) for name, values in timings.items()}
        if median["nchw"] < (1 - LAYOUT_MIN_GAIN) * median["default"]:
            os.replace(alternative_path, target)
            return {"layout": "nchw", "disabled_optimizers": list(LAYOUT_ALTERNATIVE), "trial_ms": median}
        return {"layout": "default", "trial_ms": median}
    finally:
        alternative_path.unlink(missing_ok=True)


BOUNDARY_OPS = ("QuantizeLinear", "DequantizeLinear")  # float I/O ⇄ the accelerator's integer graph


def _profile_placement(session, feed: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """The op of every kernel of one profiled run, by execution provider (a fused partition is one kernel)."""
    try:
        session.run(None, feed)
    finally:
        path = session.end_profiling()  # even when the run failed: the profile is written now, not at exit
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
        self.session_config = cpu_session_config()  # the CPU EP runs every non-accelerated node, on any device
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
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
        # ORT writes a profile when profiling ends or the session goes, whatever the outcome: into a folder of its
        # own, removed once placement is read or the session failed, so that none is left in the temp directory
        profile_dir = tempfile.mkdtemp(prefix="hubedge-ort-profile-") if profile else None
        if profile_dir is not None:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(profile_dir, "placement")
        source, cached, fresh = str(path), None, None
        self.cpu_layout: dict[str, Any] = {}
        # an .ort file is optimized already; one with external data is optimized at each load: the cache is keyed
        # by the .onnx file alone, and a graph past 2 GiB could only be saved with a data file of its own
        if device == "cpu" and Path(path).suffix != ORT_FORMAT_SUFFIX \
                and not Path(path).with_suffix(ONNX_DATA_SUFFIX).exists():
            cached = optimized_model_path(Path(path), ort.__version__)
        try:
            if cached is not None and not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                fresh = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
                self.cpu_layout = _choose_cpu_layout(ort, str(path), threads, fresh)
                _layout_record(cached).write_text(json.dumps(self.cpu_layout))
                os.replace(fresh, cached)  # the record first: a cached graph always has its record
            if cached is not None and cached.is_file():
                source = str(cached)  # already optimized for this CPU: skip the optimizer at load
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                self.cpu_layout = self.cpu_layout or _read_layout_record(cached)
            self._session = ort.InferenceSession(source, options, providers=providers)
            self.optimized_cache = source if source != str(path) else None
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
            if profile_dir is not None and not hasattr(self, "_session"):
                shutil.rmtree(profile_dir, ignore_errors=True)
        if device == "gpu" and self.device_status.backend not in self._session.get_providers():
            self._session = None  # its profile is written now, into the folder removed next
            if profile_dir is not None:
                shutil.rmtree(profile_dir, ignore_errors=True)
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
            zeros = np.zeros((self.fixed_batch or 1, side, side, 3), np.float32)
            try:
                ops = _profile_placement(self._session, {self._input.name: zeros})
            finally:
                shutil.rmtree(profile_dir, ignore_errors=True)
            self.placement = {provider: len(names) for provider, names in ops.items()}
            cpu_ops = ops.get("CPUExecutionProvider", [])
            # quantizing the float input and dequantizing the output stay on the CPU by design of the QNN EP
            self.cpu_fallback = [op for op in cpu_ops if op not in BOUNDARY_OPS or device != "npu"]
            if self.cpu_fallback:
                warnings.warn(f"{Path(path).name} on {device}: {len(self.cpu_fallback)} of "
                              f"{sum(self.placement.values())} kernels run on the CPU, not the "
                              f"{self.device_status.backend} ({', '.join(sorted(set(self.cpu_fallback)))}); "
                              "--strict-device refuses such a split", stacklevel=2)

    @property
    def fixed_batch(self) -> int | None:
        """The batch the artifact was exported with (``--batch N``), or None for a dynamic one."""
        size = self._input.shape[0]
        return size if isinstance(size, int) else None

    def direct_call(self, batch: np.ndarray) -> Callable[[], Any]:
        """One image; a fixed-batch artifact's call runs its whole batch (that image and copies)."""
        feed = {self._input.name: np.ascontiguousarray(fixed_batches(batch[:1], self.fixed_batch or 1)[0])}
        return lambda: self._session.run(None, feed)[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        size = self.fixed_batch or (1 if self.pinned_batch else None)
        if size is not None:
            return in_fixed_batches(lambda chunk: self._session.run(None, {self._input.name: chunk})[0], batch, size)
        return self._session.run(None, {self._input.name: batch})[0]
