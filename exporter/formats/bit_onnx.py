"""A recognised BiT's fp32 ONNX graph, written from its weights (``bit_graph``) instead of converted by tf2onnx.

The ops are those tf2onnx and ONNX Runtime's constant folding leave for hubedge's edge graph: the input rescaled
in NHWC and transposed to NCHW once; convolutions with their padding folded in; GroupNorm as per-channel means
(``ReduceMean``) averaged within groups on static ``[N, 1, G, C/G]`` reshapes (times ones where a group has more
than one channel), ``Sqrt`` then ``Reciprocal``, the scale transposed to NCHW (the last GroupNorm's activation
transposed to NHWC instead, where the global pool reads it); a ``Gemm`` head. What follows
(``onnx_mobile``'s rewrites, fp16, int8, the QNN recipe) then sees the file tf2onnx would have written. Batch
is dynamic (``runtimes.contract.BATCH_DIM``), the spatial size fixed. Opset and names follow ``formats.onnx``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hubedge.exporter.formats import onnx_storage
from hubedge.exporter.formats.bit_graph import walk
from hubedge.exporter.sources.bit_layout import GN_EPSILON, GN_GROUPS, BitLayout
from hubedge.runtimes.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME

__all__ = ["write_model"]


class _OnnxWriter:
    """Nodes and initializers added straight into one model's graph (a graph built apart and then handed to the
    model would be copied whole); with ``data``, every tensor of :data:`onnx_storage.MIN_EXTERNAL_TENSOR` bytes or
    more goes to that file as it is made, at an aligned offset, and the graph only points at it."""

    def __init__(self, graph: Any, data: BinaryIO | None = None, data_name: str = "") -> None:
        self.graph, self.data, self.data_name = graph, data, data_name
        self.nhwc = False  # the activation's layout: NCHW from the input's transpose on, NHWC after the last norm
        self._count = 0
        self._shared: dict[tuple, str] = {}

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def _const(self, value: np.ndarray, kind: str = "const", share: bool = False) -> str:
        """An initializer; ``share``: one per distinct small value (axes, shapes, ones), as the converter's."""
        from onnx import numpy_helper

        key = (value.dtype.str, value.shape, value.tobytes()) if share else None
        if key is not None and key in self._shared:
            return self._shared[key]
        name = self._name(kind)
        value = value if value.flags.c_contiguous else value.copy()
        tensor = self.graph.initializer.add()
        if self.data is not None and value.nbytes >= onnx_storage.MIN_EXTERNAL_TENSOR:
            tensor.name = name
            onnx_storage.write_external(tensor, value, self.data, self.data_name)
        else:
            tensor.CopyFrom(numpy_helper.from_array(value, name))
        if key is not None:
            self._shared[key] = name
        return name

    def _node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        from onnx import helper

        output = self._name(op)
        self.graph.node.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def _axes(self, *axes: int) -> str:
        return self._const(np.array(axes, np.int64), "axes", share=True)

    def _shape(self, *dims: int) -> str:
        return self._const(np.array(dims, np.int64), "shape", share=True)

    def _scalar(self, value: float) -> str:
        # one per node, as the converter writes them: a float constant is quantized like a weight, per consumer
        return self._const(np.array(value, np.float32), "scalar")

    def images(self) -> str:
        x = self._node("Mul", [INPUT_NAME, self._scalar(2.0)])
        x = self._node("Add", [x, self._scalar(-1.0)])
        return self._node("Transpose", [x], perm=[0, 3, 1, 2])

    def conv(self, x: str, kernel: np.ndarray, stride: int, pad: int) -> str:
        size = kernel.shape[0]
        weight = self._const(kernel.transpose(3, 2, 0, 1), "kernel")
        return self._node("Conv", [x, weight], kernel_shape=[size, size], strides=[stride, stride],
                          pads=[pad] * 4, dilations=[1, 1], group=1)

    def pad_max_pool(self, x: str) -> str:
        padded = self._node("Pad", [x, self._const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")],
                            mode="constant")
        return self._node("MaxPool", [padded], kernel_shape=[3, 3], strides=[2, 2])

    def _group_average(self, per_channel: str, channels: int, back: tuple[int, ...]) -> str:
        """[N, C, 1, 1] per-channel statistics → each group's mean, broadcast back and reshaped to ``back``."""
        size = channels // GN_GROUPS
        grouped = self._node("Reshape", [per_channel, self._shape(-1, 1, GN_GROUPS, size)])
        mean = self._node("ReduceMean", [grouped, self._axes(3)], keepdims=1)
        if size > 1:
            mean = self._node("Mul", [mean, self._const(np.ones((1, 1, 1, size), np.float32), "ones", share=True)])
        return self._node("Reshape", [mean, self._shape(*back)])

    def group_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, pooled_next: bool = False) -> str:
        channels = gamma.shape[0]
        spatial = self._axes(2, 3)
        mean = self._node("ReduceMean", [x, spatial], keepdims=1)
        centred = self._node("Sub", [x, self._group_average(mean, channels, (-1, channels, 1, 1))])
        square = self._node("Mul", [centred, centred])
        variance = self._node("ReduceMean", [square, spatial], keepdims=1)
        variance = self._group_average(variance, channels, (-1, 1, 1, channels))  # NHWC, as the converter leaves it
        root = self._node("Sqrt", [self._node("Add", [variance, self._scalar(GN_EPSILON)])])
        scale = self._node("Mul", [self._node("Reciprocal", [root]), self._const(gamma.astype(np.float32), "gamma")])
        if pooled_next:  # as tf2onnx leaves it: the activation to NHWC, where the pool reads it
            self.nhwc = True
            shifted = self._node("Mul", [self._node("Transpose", [centred], perm=[0, 2, 3, 1]), scale])
            return self._node("Add", [shifted, self._const(beta.astype(np.float32), "beta")])
        scale = self._node("Transpose", [scale], perm=[0, 3, 1, 2])
        shifted = self._node("Mul", [centred, scale])
        return self._node("Add", [shifted, self._const(beta.astype(np.float32).reshape(1, channels, 1, 1), "beta")])

    def relu(self, x: str) -> str:
        return self._node("Relu", [x])

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b])

    def global_mean(self, x: str) -> str:
        return self._node("ReduceMean", [x, self._axes(1, 2) if self.nhwc else self._axes(2, 3)], keepdims=0)

    def head(self, x: str, kernel: np.ndarray, bias: np.ndarray) -> str:
        return self._node("Gemm", [x, self._const(kernel.astype(np.float32), "head_kernel"),
                                   self._const(bias.astype(np.float32), "head_bias")])


def write_model(layout: BitLayout, size: int, opset: int, data: Path | None = None) -> Any:
    """The fp32 ONNX model of ``layout`` for ``size``-pixel square images. Its weights are inline
    (``onnx_storage.save`` then decides where they are stored), or with ``data`` written to that file as they are
    made, the model pointing at it (save it beside the file with ``onnx.save``, as ``onnx_storage.data_file`` names
    it). Empties ``layout.weights`` (``bit_graph.walk``)."""
    from onnx import TensorProto, helper

    outputs = layout.num_classes or layout.architecture.feature_size
    model = helper.make_model(helper.make_graph([], "bit_" + layout.architecture.label.lower().replace(" ", "_"), [
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, size, size, 3])], [
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, outputs])]),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="hubedge", producer_version="bit_onnx")
    with contextlib.ExitStack() as stack:
        file = stack.enter_context(open(data, "wb")) if data is not None else None
        walk(_OnnxWriter(model.graph, file, data.name if data is not None else ""), layout)
    last = model.graph.node[-1]
    last.output[0] = last.name = OUTPUT_NAME
    return model
