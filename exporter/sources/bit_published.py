"""A BiT in the form the published TF Hub modules have: the test stand-in for ``--weights hub``.

The published BiT modules come from the authors' TF2 code (``google-research/big_transfer``, ``bit_tf2``), which
writes the graph differently from hubedge's edge builder (``hubedge.exporter.sources.bit``). This module rebuilds that
form from the same named weights, so that the exporter can be tested on the graph users really get:

- GroupNorm reshapes to 5-D ``[N, H, W, G, C/G]`` through a shape computed at run time (``tf.shape`` and a
  concat), takes ``tf.nn.moments`` over axes 1, 2 and 4, applies ``tf.nn.batch_normalization`` with γ and β
  reshaped to ``[G, C/G]`` and eps 1e-5, then reshapes back to the input's run-time shape;
- weight standardization (moments over the HWIO kernel's axes 0-2, eps 1e-10) runs at every call;
- the layers nest like the authors' Keras model (``root_block``, ``block1/unit01`` with Sequentials ``a``, ``b``,
  ``c``, ``a/proj/standardized_conv2d``, a pre-head ``group_norm``, ``head/dense``), so variable leaf names
  repeat (``group_norm/gamma``, ``standardized_conv2d/kernel``) as in the published modules.

The module's ``__call__`` takes float32 images in [0, 1] and maps them to [-1, 1] first, as the hub modules do.
Its outputs equal the edge twin's with the same weights to float rounding (tests: ≤ 1e-5 relative).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from hubedge.exporter.sources.bit_layout import GN_EPSILON, GN_GROUPS, WS_EPSILON
from hubedge.exporter.sources.catalog import Architecture


class PublishedGroupNorm(keras.layers.Layer):
    """GroupNorm as the published graph computes it: 5-D, from the run-time shape."""

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        channels = int(x.shape[-1])
        grouped_shape = [GN_GROUPS, channels // GN_GROUPS]
        shape = tf.shape(x)
        grouped = tf.reshape(x, tf.concat([shape[:-1], grouped_shape], axis=-1))
        mean, variance = tf.nn.moments(grouped, [1, 2, 4], keepdims=True)
        normalized = tf.nn.batch_normalization(grouped, mean, variance, tf.reshape(self.beta, grouped_shape),
                                               tf.reshape(self.gamma, grouped_shape), GN_EPSILON)
        return tf.reshape(normalized, shape)


class PublishedStandardizedConv2D(keras.layers.Conv2D):
    """A bias-free VALID convolution whose kernel is standardized in the graph at every call."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, **kwargs) -> None:
        super().__init__(filters, kernel_size, strides=strides, padding="valid", use_bias=False, **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mean, variance = tf.nn.moments(self.kernel, axes=[0, 1, 2], keepdims=True)
        kernel = (self.kernel - mean) / tf.sqrt(variance + WS_EPSILON)
        return tf.nn.conv2d(inputs, kernel, strides=self.strides, padding="VALID")


class PadForKernel(keras.layers.Layer):
    """Zero padding that lets a VALID op of ``kernel_size`` keep the SAME-like output size (BiT's explicit pad)."""

    def __init__(self, kernel_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        total = kernel_size - 1
        self.before, self.after = total // 2, total - total // 2

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.pad(x, [[0, 0], [self.before, self.after], [self.before, self.after], [0, 0]])


class PublishedUnit(keras.layers.Layer):
    """A pre-activation bottleneck unit, nested as in the published modules."""

    def __init__(self, filters: int, stride: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters, self.stride = filters, stride
        self.a = keras.Sequential([PublishedGroupNorm(name="group_norm"), keras.layers.ReLU()], name="a")
        self.a_conv = PublishedStandardizedConv2D(filters, 1, name="a/standardized_conv2d")
        self.b = keras.Sequential([PublishedGroupNorm(name="group_norm"), keras.layers.ReLU(), PadForKernel(3),
                                   PublishedStandardizedConv2D(filters, 3, stride, name="standardized_conv2d")],
                                  name="b")
        self.c = keras.Sequential([PublishedGroupNorm(name="group_norm"), keras.layers.ReLU(),
                                   PublishedStandardizedConv2D(4 * filters, 1, name="standardized_conv2d")],
                                  name="c")
        self.proj = None

    def build(self, input_shape: tf.TensorShape) -> None:
        if self.stride > 1 or int(input_shape[-1]) != 4 * self.filters:
            self.proj = PublishedStandardizedConv2D(4 * self.filters, 1, self.stride, name="a/proj/standardized_conv2d")
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        activated = self.a(x)
        shortcut = self.proj(activated) if self.proj is not None else x
        return self.c(self.b(self.a_conv(activated))) + shortcut

    def named_layers(self, prefix: str) -> list[tuple[str, keras.layers.Layer]]:
        """(official weight-name prefix, layer) for every layer with weights in this unit."""
        named = [(f"{prefix}/a/group_norm", self.a.layers[0]), (f"{prefix}/a/standardized_conv2d", self.a_conv),
                 (f"{prefix}/b/group_norm", self.b.layers[0]), (f"{prefix}/b/standardized_conv2d", self.b.layers[3]),
                 (f"{prefix}/c/group_norm", self.c.layers[0]), (f"{prefix}/c/standardized_conv2d", self.c.layers[2])]
        if self.proj is not None:
            named.append((f"{prefix}/a/proj/standardized_conv2d", self.proj))
        return named


class PublishedResNetV2(keras.Model):
    """ResNet-v2 with GroupNorm and WS, laid out as the published BiT modules are; input in [0, 1]."""

    def __init__(self, architecture: Architecture, num_classes: int | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = keras.Sequential([
            PadForKernel(7), PublishedStandardizedConv2D(architecture.root_filters, 7, 2, name="standardized_conv2d"),
            PadForKernel(3), keras.layers.MaxPool2D(3, 2, padding="valid"),
        ], name="root_block")
        self.stages = [
            keras.Sequential([PublishedUnit(architecture.stage_filters(stage), 2 if stage > 0 and unit == 0 else 1,
                                            name=f"unit{unit + 1:02d}") for unit in range(units)],
                             name=f"block{stage + 1}")
            for stage, units in enumerate(architecture.units)
        ]
        self.pre_head_norm = PublishedGroupNorm(name="group_norm")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(num_classes, name="head/dense") if num_classes is not None else None

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = self.root(images * 2.0 - 1.0)
        for stage in self.stages:
            x = stage(x)
        x = self.pool(tf.nn.relu(self.pre_head_norm(x)))
        return self.head(x) if self.head is not None else x

    def named_variables(self) -> dict[str, tf.Variable]:
        """Every variable under its official ``.npz`` name (the model must have been called once)."""
        named: list[tuple[str, keras.layers.Layer]] = [("resnet/root_block/standardized_conv2d", self.root.layers[1])]
        for number, stage in enumerate(self.stages, 1):
            for index, unit in enumerate(stage.layers, 1):
                named += unit.named_layers(f"resnet/block{number}/unit{index:02d}")
        named.append(("resnet/group_norm", self.pre_head_norm))
        if self.head is not None:
            named.append(("resnet/head/conv2d", self.head))
        return {f"{prefix}/{variable.name.split('/')[-1].split(':')[0]}": variable
                for prefix, layer in named for variable in layer.weights}


def build_published(architecture: Architecture, num_classes: int | None,
                    weights: dict[str, "object"]) -> PublishedResNetV2:
    """The published-form model with ``weights`` (official names and checkpoint shapes, as
    ``BitTwin.get_weights`` gives them) assigned; refuses a set that does not fit it."""
    import numpy as np

    model = PublishedResNetV2(architecture, num_classes, name="resnet")
    model(tf.zeros([1, 64, 64, 3]))  # builds every variable
    variables = model.named_variables()
    missing = sorted(set(variables) - set(weights))
    if missing:
        raise ValueError(f"the weights lack {len(missing)} this published-form BiT needs (first: {missing[0]})")
    for name, variable in variables.items():
        variable.assign(np.asarray(weights[name], np.float32).reshape(variable.shape))
    return model
