"""Which runtime can run on which device here, and why not where it cannot.

Discovery asks each runtime itself (ONNX Runtime's providers and plugin EP devices, OpenVINO's
``available_devices``, the libraries LiteRT can load) and imports nothing that is not installed. A device
that is absent is reported with its reason, never silently replaced by the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

from hubedge.runtimes.errors import HubedgeError

__all__ = ["DEVICES", "DISCOVERERS", "DeviceStatus", "DeviceUnavailableError", "GPU_EPS", "LITERT_GPU_ACCELERATOR",
    "QNN_EP", "RESOURCE_PREFIX", "TENSORRT_EP", "TENSORRT_LIBRARY", "VULKAN_LOADER", "discover", "litert_gpu_probe",
    "ray_resources", "register_qnn", "require", "status"]

DEVICES = ("cpu", "gpu", "npu")
QNN_EP = "QNNExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"
TENSORRT_LIBRARY = "libnvinfer.so.10"
GPU_EPS = ("CUDAExecutionProvider", TENSORRT_EP)


class DeviceUnavailableError(HubedgeError):
    """The asked-for device is not present for this runtime here."""


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """One (runtime, device) pair: available or not, through what, and any caveat."""

    runtime: str
    device: str
    available: bool
    backend: str = ""
    reason: str = ""  # why not, when unavailable
    note: str = ""  # a caveat that travels with every figure measured on it
    simulated: bool = False  # a simulator of the device on this CPU: one busy core per process (see one_core_each)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as none
        return False


def _loadable(library: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _not_installed(runtime: str, package: str, extra: str) -> list[DeviceStatus]:
    why = f"{package} is not installed (pip install 'hubedge[{extra}]')"
    return [DeviceStatus(runtime, device, False, reason=why) for device in DEVICES]


@functools.cache
def register_qnn() -> bool:
    """Registers ``onnxruntime-qnn``'s plugin EP with ONNX Runtime once; False when the package is absent."""
    if not _installed("onnxruntime_qnn"):
        return False
    import onnxruntime as ort
    import onnxruntime_qnn

    ort.register_execution_provider_library(QNN_EP, onnxruntime_qnn.get_library_path())
    return True


def _onnxruntime() -> list[DeviceStatus]:
    name = "onnxruntime"
    if not _installed("onnxruntime"):
        return _not_installed(name, "onnxruntime", "onnx")
    import onnxruntime as ort

    providers = ort.get_available_providers()
    rows = [DeviceStatus(name, "cpu", True, "CPUExecutionProvider")]
    # onnxruntime-gpu lists TensorRT whether or not TensorRT itself (libnvinfer) is installed; CUDA comes first
    gpu = next((ep for ep in GPU_EPS if ep in providers and (ep != TENSORRT_EP or _loadable(TENSORRT_LIBRARY))), None)
    if gpu:
        rows.append(DeviceStatus(name, "gpu", True, gpu))
    else:
        rows.append(DeviceStatus(name, "gpu", False, reason="no CUDA/TensorRT execution provider (install "
                                 "onnxruntime-gpu on a machine with an NVIDIA GPU)"))
    if register_qnn() and any(d.ep_name == QNN_EP for d in ort.get_ep_devices()):
        import platform

        simulated = platform.machine().lower() in ("x86_64", "amd64")
        rows.append(DeviceStatus(
            name, "npu", True, "QNNExecutionProvider (HTP)",
            note="HTP simulator on x86-64: the NPU's numerics, not its speed" if simulated else "",
            simulated=simulated,
        ))
    else:
        rows.append(DeviceStatus(name, "npu", False, reason="onnxruntime-qnn is not installed (pip install "
                                 "'hubedge[npu]') or registered no QNN device"))
    return rows


def _openvino() -> list[DeviceStatus]:
    name = "openvino"
    if not _installed("openvino"):
        return _not_installed(name, "openvino", "openvino")
    import openvino as ov

    present = ov.Core().available_devices
    rows = []
    for device in DEVICES:
        matches = [d for d in present if d.split(".")[0] == device.upper()]
        if matches:
            rows.append(DeviceStatus(name, device, True, matches[0]))
        else:
            rows.append(DeviceStatus(name, device, False, reason=f"OpenVINO sees no {device.upper()} here "
                                     f"(available: {', '.join(present) or 'none'})"))
    return rows


LITERT_GPU_ACCELERATOR = "libLiteRtWebGpuAccelerator.so"  # ships in ai-edge-litert's wheel
VULKAN_LOADER = "libvulkan.so.1"


def litert_gpu_probe() -> str:
    """Why LiteRT's GPU accelerator cannot start here, or "" when it can try.

    The accelerator is WebGPU (Dawn) over Vulkan on Linux: without the Vulkan loader it finds no adapter.
    Whether a GPU answers is known only when a model is compiled for it; the adapter reports that then.
    """
    package = Path(importlib.util.find_spec("ai_edge_litert").origin).parent
    if not (package / LITERT_GPU_ACCELERATOR).is_file():
        return f"this ai-edge-litert ships no {LITERT_GPU_ACCELERATOR}"
    if not _loadable(VULKAN_LOADER):
        return (f"no Vulkan loader ({VULKAN_LOADER}): LiteRT's GPU accelerator runs WebGPU over Vulkan "
                "(install libvulkan1 and the GPU's Vulkan driver)")
    return ""


def _litert() -> list[DeviceStatus]:
    name = "litert"
    if not _installed("ai_edge_litert"):
        return _not_installed(name, "ai-edge-litert", "tflite")
    gpu_problem = litert_gpu_probe()
    return [
        DeviceStatus(name, "cpu", True, "XNNPACK"),
        DeviceStatus(name, "gpu", False, reason=gpu_problem) if gpu_problem else
        DeviceStatus(name, "gpu", True, "WebGPU accelerator (Vulkan)",
                     note="a GPU is confirmed when a model is compiled for it"),
        DeviceStatus(name, "npu", False, reason="LiteRT reaches NPUs through vendor dispatch libraries on "
                     "phones (Qualcomm, MediaTek, Google Tensor); none here"),
    ]


def _tf() -> list[DeviceStatus]:
    available = _installed("tensorflow")
    cpu = DeviceStatus("tf", "cpu", available, "TensorFlow (FP32 reference)",
                       reason="" if available else "tensorflow is not installed (pip install 'hubedge[export]')")
    why = "the TF reference runs on the CPU by design: it is the FP32 yardstick"
    return [cpu, DeviceStatus("tf", "gpu", False, reason=why), DeviceStatus("tf", "npu", False, reason=why)]


DISCOVERERS = {"tf": _tf, "litert": _litert, "onnxruntime": _onnxruntime, "openvino": _openvino}


def discover() -> list[DeviceStatus]:
    """Every runtime × device, available or with its reason."""
    return [row for find in DISCOVERERS.values() for row in find()]


def status(runtime: str, device: str) -> DeviceStatus:
    if device not in DEVICES:
        raise HubedgeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return next(row for row in DISCOVERERS[runtime]() if row.device == device)


def require(runtime: str, device: str) -> DeviceStatus:
    """The status of an available device, or DeviceUnavailableError naming why it is not here."""
    found = status(runtime, device)
    if not found.available:
        raise DeviceUnavailableError(f"{runtime} on {device}: not available here: {found.reason}")
    return found


RESOURCE_PREFIX = "device:"


def ray_resources() -> dict[str, int]:
    """The Ray custom resources this machine offers to benches (``hubedge.benchmarks.fanout``): ``device:<device>`` for
    each device some runtime runs on here, and ``device:cpu-<class>`` for its CPU class (``hubedge.runtimes.cpu``). One
    unit each: a node times one bench at a time. Give them to ``ray start --resources``."""
    from hubedge.runtimes.cpu import cpu_class

    offered = {row.device for row in discover() if row.available}
    names = [f"{RESOURCE_PREFIX}{device}" for device in offered]
    if "cpu" in offered:
        names.append(f"{RESOURCE_PREFIX}cpu-{cpu_class()}")
    return dict.fromkeys(sorted(names), 1)
