"""A recognised BiT's fp32 OpenVINO model, built from its weights (``bit_graph``) instead of by ``ov.convert_model``.

The ops are those ``ov.convert_model`` leaves for hubedge's edge SavedModel: the input transposed to NCHW once,
then rescaled; convolutions with their padding folded in; GroupNorm as per-channel means averaged within groups on
static ``[N, 1, G, C/G]`` reshapes (times ones where a group has more than one channel) and ``Power(-0.5)`` for
the reciprocal; a ``MatMul`` head with its bias added. Constants share the numpy arrays' memory until the model is
saved. Batch is dynamic, the spatial size fixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hubedge.exporter.formats.bit_graph import walk
from hubedge.exporter.sources.bit_layout import GN_EPSILON, GN_GROUPS, BitLayout
from hubedge.runtimes.contract import INPUT_NAME

__all__ = ["build_model"]


class _OpenVinoWriter:
    def __init__(self, size: int) -> None:
        import openvino.opset13 as ops

        self.ops = ops
        self.parameter = ops.parameter([-1, size, size, 3], np.float32, name=INPUT_NAME)
        self.parameter.output(0).set_names({INPUT_NAME})

    def _const(self, value: np.ndarray) -> Any:
        return self.ops.constant(value if value.flags.c_contiguous else value.copy())

    def _filled(self, value: float, shape: tuple[int, ...] = (1, 1, 1, 1)) -> Any:
        return self._const(np.full(shape, value, np.float32))

    def _ints(self, *values: int) -> Any:
        return self._const(np.array(values, np.int64))

    def images(self) -> Any:
        ops = self.ops
        x = ops.transpose(self.parameter, self._ints(0, 3, 1, 2))
        return ops.add(ops.multiply(x, self._filled(2.0)), self._filled(-1.0))

    def conv(self, x: Any, kernel: np.ndarray, stride: int, pad: int) -> Any:
        return self.ops.convolution(x, self._const(kernel.transpose(3, 2, 0, 1)), [stride, stride], [pad, pad],
                                    [pad, pad], [1, 1], auto_pad="explicit" if pad else "valid")

    def pad_max_pool(self, x: Any) -> Any:
        ops = self.ops
        padded = ops.pad(x, self._ints(0, 0, 1, 1), self._ints(0, 0, 1, 1), "constant",
                         self._const(np.array(0.0, np.float32)))
        return ops.max_pool(padded, [2, 2], [1, 1], [0, 0], [0, 0], [3, 3], rounding_type="floor",
                            auto_pad="valid").output(0)

    def _group_average(self, per_channel: Any, channels: int) -> Any:
        ops, size = self.ops, channels // GN_GROUPS
        grouped = ops.reshape(per_channel, self._ints(-1, 1, GN_GROUPS, size), special_zero=False)
        mean = ops.reduce_mean(grouped, self._const(np.array(3, np.int64)), keep_dims=True)
        if size > 1:
            mean = ops.multiply(mean, self._filled(1.0, (1, 1, 1, size)))
        return ops.reshape(mean, self._ints(-1, channels, 1, 1), special_zero=False)

    def group_norm(self, x: Any, gamma: np.ndarray, beta: np.ndarray, pooled_next: bool = False) -> Any:
        ops, channels = self.ops, gamma.shape[0]
        mean = ops.reduce_mean(x, self._ints(2, 3), keep_dims=True)
        centred = ops.subtract(x, self._group_average(mean, channels))
        variance = ops.reduce_mean(ops.multiply(centred, centred), self._ints(2, 3), keep_dims=True)
        variance = self._group_average(variance, channels)
        scale = ops.power(ops.add(variance, self._filled(GN_EPSILON)), self._filled(-0.5))
        scale = ops.multiply(scale, self._const(gamma.astype(np.float32).reshape(1, channels, 1, 1)))
        return ops.add(ops.multiply(centred, scale), self._const(beta.astype(np.float32).reshape(1, channels, 1, 1)))

    def relu(self, x: Any) -> Any:
        return self.ops.relu(x)

    def add(self, a: Any, b: Any) -> Any:
        return self.ops.add(a, b)

    def global_mean(self, x: Any) -> Any:
        return self.ops.reduce_mean(x, self._ints(2, 3), keep_dims=False)

    def head(self, x: Any, kernel: np.ndarray, bias: np.ndarray) -> Any:
        ops = self.ops
        product = ops.matmul(x, self._const(kernel.astype(np.float32).T), transpose_a=False, transpose_b=True)
        return ops.add(product, self._const(bias.astype(np.float32).reshape(1, -1)))


def build_model(layout: BitLayout, size: int) -> Any:
    """The fp32 ``ov.Model`` of ``layout`` for ``size``-pixel square images. Empties ``layout.weights``
    (``bit_graph.walk``)."""
    import openvino as ov

    writer = _OpenVinoWriter(size)
    output = walk(writer, layout)
    result = writer.ops.result(output)
    return ov.Model([result], [writer.parameter], "bit_" + layout.architecture.label.lower().replace(" ", "_"))
