"""The GPU paths' decisions that need no GPU: which execution provider or accelerator is chosen, what is
refused, and that a GPU that does not start is reported as absent rather than replaced by the CPU.

The paths themselves ran on an NVIDIA H100 (onnxruntime-gpu 1.31.1 CUDA EP; LiteRT 2.3 WebGPU over Vulkan);
the figures are in docs/devices.md.
"""

from __future__ import annotations

import pytest

from hubedge import runtimes
from hubedge.runtimes import devices
from hubedge.runtimes.devices import DeviceStatus, DeviceUnavailableError
from hubedge.runtimes.errors import HubedgeError


def test_litert_gpu_needs_a_vulkan_loader_and_says_so(monkeypatch):
    monkeypatch.setattr(devices, "_loadable", lambda library: library != devices.VULKAN_LOADER)
    gpu = devices.status("litert", "gpu")
    assert not gpu.available and "Vulkan" in gpu.reason and devices.VULKAN_LOADER in gpu.reason


def test_tensorrt_is_chosen_only_when_tensorrt_itself_loads(monkeypatch):
    import onnxruntime as ort

    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: every)
    monkeypatch.setattr(devices, "_loadable", lambda library: False)  # onnxruntime-gpu without libnvinfer
    assert devices.status("onnxruntime", "gpu").backend == "CUDAExecutionProvider"
    monkeypatch.setattr(ort, "get_available_providers", lambda: [every[0], every[2]])
    assert not devices.status("onnxruntime", "gpu").available
    monkeypatch.setattr(devices, "_loadable", lambda library: True)
    assert devices.status("onnxruntime", "gpu").backend == "TensorrtExecutionProvider"


def test_an_onnx_runtime_gpu_that_does_not_start_is_absent_not_the_cpu(tiny_exports, monkeypatch):
    """ONNX Runtime drops an EP it cannot start and runs on the CPU; the adapter must not call that a GPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: the CUDA EP may really start")
    from hubedge.runtimes import onnx_runtime

    fake = DeviceStatus("onnxruntime", "gpu", True, "CUDAExecutionProvider")
    monkeypatch.setattr(onnx_runtime, "require", lambda runtime, device: fake)
    with pytest.warns(UserWarning), pytest.raises(DeviceUnavailableError, match="did not start"):
        runtimes.load(tiny_exports[("onnx", "fp32")].artifact, device="gpu")


@pytest.mark.parametrize("precision", ["int8", "dynamic"])
def test_litert_gpu_refuses_quantized_artifacts_it_computes_wrongly(tiny_exports, precision):
    from hubedge.runtimes.litert import _GpuModel

    artifact = tiny_exports[("tflite", precision)].artifact
    with pytest.raises(HubedgeError, match=f"quantized \\({precision}\\).*run it on the cpu"):
        _GpuModel(artifact, strict=False, precision=precision)


def test_litert_gpu_without_a_gpu_is_reported_absent(tiny_exports):
    from hubedge.runtimes.litert import _GpuModel

    if not devices.litert_gpu_probe():
        pytest.skip("a Vulkan loader is present here: whether a GPU answers depends on the machine")
    with pytest.raises(DeviceUnavailableError, match="not available here"):
        _GpuModel(tiny_exports[("tflite", "fp32")].artifact, strict=False, precision="fp32")
