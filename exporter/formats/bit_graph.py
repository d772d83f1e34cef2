"""BiT's edge graph, written straight from its weights: the walk that the ONNX and OpenVINO writers share.

The converters hold several copies of a model while they convert it: tf2onnx about 11x the fp32 weights,
``ov.convert_model`` about 5x (``benchmarks/records/big-models.md``), which rules R50x3 and up out of ONNX on a
24 GB machine. A BiT whose variables ``bit_layout.recognise`` matches needs no conversion: its graph is fixed by
its architecture. This walk visits the layers of hubedge's edge graph (``hubedge.exporter.sources.bit``) in order
and hands each one's weights to a writer (``bit_onnx``, ``bit_openvino``), which adds the ops the converters emit
for that layer, op for op, so that the artifacts and everything downstream of them (fp16, int8, the mobile checks)
are those of the converted graph. Weight standardization is folded here, in float64, and each weight leaves the
layout as it is used, so that the weights are in memory about once.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import numpy as np

from hubedge.exporter.sources import LoadedModel
from hubedge.exporter.sources.bit_layout import HEAD, PRE_HEAD, ROOT, BitLayout, Unrecognised, standardize_kernel

__all__ = ["GraphWriter", "edge_layout", "walk"]

T = TypeVar("T")


class GraphWriter(Protocol, Generic[T]):
    """What a format adds for each layer; ``T`` is its handle on a tensor. Kernels are standardized HWIO arrays;
    spatial tensors are NCHW after :meth:`images`. ``pooled_next`` marks the last GroupNorm, which the global pool
    reads (tf2onnx computes its affine part in NHWC there)."""

    def images(self) -> T: ...

    def conv(self, x: T, kernel: np.ndarray, stride: int, pad: int) -> T: ...

    def pad_max_pool(self, x: T) -> T: ...

    def group_norm(self, x: T, gamma: np.ndarray, beta: np.ndarray, pooled_next: bool = False) -> T: ...

    def relu(self, x: T) -> T: ...

    def add(self, a: T, b: T) -> T: ...

    def global_mean(self, x: T) -> T: ...

    def head(self, x: T, kernel: np.ndarray, bias: np.ndarray) -> T: ...


def edge_layout(loaded: LoadedModel, graph_writer: str = "direct") -> BitLayout | str:
    """The weights to write ``loaded``'s export graph from, or why it is converted instead (one line). Only a graph
    that is hubedge's edge form (``loaded.graph["edge_form"]``, set by the graph route) is written: any other
    graph (a module exported as-is, EfficientNet-Lite0) computes something this walk does not write."""
    from hubedge.exporter.sources.bit_weights import read_layout

    if graph_writer != "direct":
        return "asked for (--graph-writer converter)"
    if not (loaded.graph or {}).get("edge_form"):
        return "its export graph is not hubedge's edge BiT graph"
    found = read_layout(loaded.export_savedmodel)
    if isinstance(found, Unrecognised):
        return f"its variables make no BiT the writer knows ({found.reason})"
    if (found.num_classes or found.architecture.feature_size) != loaded.info.num_outputs:
        return f"its variables make a {found.describe()}, but it outputs {loaded.info.num_outputs} values"
    return found


def walk(writer: GraphWriter[T], layout: BitLayout) -> T:
    """Adds the whole graph of ``layout`` to ``writer``; returns its output. ``layout.weights`` is emptied as the
    walk goes (a 4.4 GB R152x4 is then never held twice)."""
    weights = layout.weights

    def take(name: str) -> np.ndarray:  # an array, or a tensor read from its checkpoint now (bit_weights)
        return np.asarray(weights.pop(name))

    def kernel(name: str) -> np.ndarray:
        return standardize_kernel(take(name))

    def norm(x: T, prefix: str, pooled_next: bool = False) -> T:
        return writer.relu(writer.group_norm(x, take(f"{prefix}/gamma"), take(f"{prefix}/beta"), pooled_next))

    arch = layout.architecture
    x = writer.conv(writer.images(), kernel(ROOT), 2, 3)
    x = writer.pad_max_pool(x)
    for stage, units in enumerate(arch.units):
        for unit in range(units):
            prefix = f"resnet/block{stage + 1}/unit{unit + 1:02d}"
            stride = 2 if stage > 0 and unit == 0 else 1
            a = norm(x, f"{prefix}/a/group_norm")
            # the edge builder projects the shortcut in a unit that changes width or stride: every first unit
            shortcut = writer.conv(a, kernel(f"{prefix}/a/proj/standardized_conv2d/kernel"), stride, 0) \
                if unit == 0 else x
            y = writer.conv(a, kernel(f"{prefix}/a/standardized_conv2d/kernel"), 1, 0)
            y = norm(y, f"{prefix}/b/group_norm")
            y = writer.conv(y, kernel(f"{prefix}/b/standardized_conv2d/kernel"), stride, 1)
            y = norm(y, f"{prefix}/c/group_norm")
            y = writer.conv(y, kernel(f"{prefix}/c/standardized_conv2d/kernel"), 1, 0)
            x = writer.add(y, shortcut)
    x = writer.global_mean(norm(x, PRE_HEAD, pooled_next=True))
    if layout.num_classes is not None:
        head = take(f"{HEAD}/kernel")
        x = writer.head(x, head.reshape(head.shape[-2:]), take(f"{HEAD}/bias"))
    if weights:
        raise AssertionError(f"the walk left {len(weights)} weights unused (first: {next(iter(weights))})")
    return x
