"""The names the exporter writes into artifacts and the runtime adapters read back: one place for both sides.

The runtimes side owns them because it is the one that must work without the exporter installed.
"""

from __future__ import annotations

__all__ = ["BATCH_DIM", "INPUT_NAME", "METADATA_PREFIX", "ONNX_DATA_SUFFIX", "OUTPUT_NAME", "PRECISIONS",
    "PRECISION_NAMES", "metadata_key", "rt_info_path"]

# precision names as ``--quantize`` spells them → the precision an artifact records
PRECISION_NAMES = {"none": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "dynamic": "dynamic",
                   "int8": "int8"}
PRECISIONS = tuple(dict.fromkeys(PRECISION_NAMES.values()))  # fp32, fp16, bf16, dynamic, int8

INPUT_NAME = "images"  # the graph input of every artifact: float32 RGB in [0, 1], NHWC
OUTPUT_NAME = "outputs"  # the ONNX graph output
BATCH_DIM = "batch"  # the dynamic batch dimension's name in ONNX, so that runtimes can pin it
# an ONNX artifact's weights past the external-data threshold: <model>.<format>.<precision>.onnx.data beside it
ONNX_DATA_SUFFIX = ".onnx.data"

# where an artifact carries hubedge's record of itself: a metadata key prefix (ONNX metadata_props, TFLite
# metadata entries) or an rt_info path root (OpenVINO)
METADATA_PREFIX = "hubedge"


def metadata_key(name: str) -> str:
    """``precision`` → ``hubedge.precision``: a key in ONNX ``metadata_props`` or a TFLite metadata entry."""
    return f"{METADATA_PREFIX}.{name}"


def rt_info_path(name: str) -> list[str]:
    """``precision`` → ``["hubedge", "precision"]``: a path in an OpenVINO model's rt_info."""
    return [METADATA_PREFIX, name]
