"""BiT (Big Transfer) ResNet-v2 with Group Norm and Weight Standardization, faithful to ``bit_tf2``.

Builds the architecture for any depth/width as a tf-keras model, loads and saves official ``.npz`` checkpoints by
their weight names, and seeds deterministic, well-conditioned weights for offline work. The facts followed
(docs/stack-facts.md, "BiT, as the authors wrote it"): WS over the HWIO kernel's axes [0,1,2] with eps 1e-10,
computed in the graph; GroupNorm with 32 groups and eps 1e-5; explicit zero padding then VALID convs;
pre-activation bottleneck units; a pre-head GN → ReLU → global average pool; hub modules rescale [0,1] inputs to
[-1,1].

GroupNorm is written so that every reshape has a static shape (only the batch is -1) and every tensor stays 4-D or
less: per-channel moments are averaged within groups on ``[N, 1, G, C/G]`` tensors, so no ``tf.shape()`` chains
reach the exported graphs and no 5-D tensors reach NPU compilers (docs/stack-facts.md).
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from hubedge.exporter.sources.bit_layout import GN_EPSILON, GN_GROUPS, WS_EPSILON, standardize_kernel
from hubedge.exporter.sources.catalog import Architecture
from hubedge.runtimes.errors import CorruptModelError

RESIDUAL_BRANCH_SCALE = 0.1
ROOT_SMOOTHING_SIGMA = 2.0


class StandardizedConv2D(keras.layers.Layer):
    """A bias-free convolution whose kernel is standardized per output channel (BiT's WS): at run time, or, with
    ``in_graph=False``, once when the weights are set (the kernel variable then holds the standardized kernel)."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, in_graph: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.in_graph = filters, kernel_size, strides, in_graph

    def build(self, input_shape: tf.TensorShape) -> None:
        shape = (self.kernel_size, self.kernel_size, int(input_shape[-1]), self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="he_normal")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        kernel = self.kernel
        if self.in_graph:
            mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
            kernel = (kernel - mean) / tf.sqrt(variance + WS_EPSILON)
        return tf.nn.conv2d(inputs, kernel, strides=self.strides, padding="VALID")


class GroupNormalization(keras.layers.Layer):
    """GroupNorm (32 groups) with static-shape, at most 4-D arithmetic; see the module docstring."""

    def __init__(self, groups: int = GN_GROUPS, epsilon: float = GN_EPSILON, **kwargs) -> None:
        super().__init__(**kwargs)
        self.groups, self.epsilon = groups, epsilon

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"{channels} channels do not split into {self.groups} groups")
        self.channels = channels
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def _group_average(self, per_channel: tf.Tensor) -> tf.Tensor:
        """[N,1,1,C] per-channel statistics → the mean over each channel's group, broadcast back to [N,1,1,C]."""
        size = self.channels // self.groups
        grouped = tf.reshape(per_channel, [-1, 1, self.groups, size])
        group_mean = tf.reduce_mean(grouped, axis=3, keepdims=True)
        return tf.reshape(group_mean * tf.ones([1, 1, 1, size]), [-1, 1, 1, self.channels])

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mean = self._group_average(tf.reduce_mean(inputs, axis=[1, 2], keepdims=True))
        centred = inputs - mean
        variance = self._group_average(tf.reduce_mean(tf.square(centred), axis=[1, 2], keepdims=True))
        return centred * (tf.math.rsqrt(variance + self.epsilon) * self.gamma) + self.beta


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint by name; a damaged file is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zlib.error, zipfile.BadZipFile, NotImplementedError,
            MemoryError, TypeError, struct.error) as error:
        raise CorruptModelError(f"cannot read the checkpoint {path}: {type(error).__name__}: {str(error)[:200]}") \
            from None
    broken = [name for name, array in arrays.items()
              if array.dtype.kind not in "fiub" or (array.dtype.kind == "f" and not np.isfinite(array).all())]
    if broken:
        raise CorruptModelError(f"the checkpoint {path} holds non-numeric or non-finite values in {broken[0]}"
                                f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}; it is damaged")
    return arrays


def _pad(kernel_size: int) -> keras.layers.Layer:
    total = kernel_size - 1
    return keras.layers.ZeroPadding2D(((total // 2, total - total // 2),) * 2)


def _smooth_spatially(kernel: np.ndarray, sigma: float) -> np.ndarray:
    """Blurs an HWIO kernel along H and W with a normalized Gaussian (zero padding)."""
    size = kernel.shape[0]
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    blur = np.exp(-(offsets**2) / (2 * sigma**2))
    blur /= blur.sum(axis=1, keepdims=True)
    return np.einsum("ih,jw,hwco->ijco", blur, blur, kernel)


class BitTwin:
    """A BiT model and a map from official ``.npz`` weight names to its variables.

    ``model`` maps float32 images in [0, 1] of any size to logits (``num_classes``) or, when
    ``num_classes`` is None, to the 2048·w pre-logits features. ``fold_standardization`` standardizes the kernels
    once, when weights are set, instead of in the graph at every call (what re-authoring exports: the converters
    then see constant kernels whatever their constant folding does).
    """

    def __init__(self, architecture: Architecture, num_classes: int | None, fold_standardization: bool = False) -> None:
        self.architecture = architecture
        self.num_classes = num_classes
        self.fold_standardization = fold_standardization
        self._named: dict[str, tf.Variable] = {}
        self.model = self._build()

    def _conv(self, filters: int, kernel_size: int, strides: int = 1, name: str = "") -> StandardizedConv2D:
        return StandardizedConv2D(filters, kernel_size, strides, in_graph=not self.fold_standardization, name=name)

    def _track(self, prefix: str, layer: keras.layers.Layer) -> keras.layers.Layer:
        self._pending.append((prefix, layer))
        return layer

    def _build(self) -> keras.Model:
        self._pending: list[tuple[str, keras.layers.Layer]] = []
        arch = self.architecture
        images = keras.Input(shape=(None, None, 3), dtype=tf.float32, name="images")
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(images)
        x = _pad(7)(x)
        x = self._track("resnet/root_block/standardized_conv2d",
                        self._conv(arch.root_filters, 7, 2, name="root_conv"))(x)
        x = keras.layers.ZeroPadding2D(1)(x)
        x = keras.layers.MaxPool2D(3, 2, padding="valid")(x)
        for stage, units in enumerate(arch.units):
            filters = arch.stage_filters(stage)
            for unit in range(units):
                stride = 2 if stage > 0 and unit == 0 else 1
                x = self._unit(x, filters, stride, f"resnet/block{stage + 1}/unit{unit + 1:02d}")
        x = self._track("resnet/group_norm", GroupNormalization(name="pre_head_gn"))(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D(name="features")(x)
        if self.num_classes is not None:
            x = self._track("resnet/head/conv2d", keras.layers.Dense(self.num_classes, name="head"))(x)
        model = keras.Model(images, x, name="bit_" + re.sub(r"[^a-z0-9]+", "_", arch.label.lower()).strip("_"))
        for prefix, layer in self._pending:
            for variable in layer.weights:
                leaf = variable.name.split("/")[-1].split(":")[0]
                self._named[f"{prefix}/{leaf}"] = variable
        del self._pending
        return model

    def _unit(self, x: tf.Tensor, filters: int, stride: int, prefix: str) -> tf.Tensor:
        tag = prefix.replace("resnet/", "").replace("/", "_")
        a = self._track(f"{prefix}/a/group_norm", GroupNormalization(name=f"{tag}_a_gn"))(x)
        a = keras.layers.ReLU()(a)
        shortcut = x
        if stride > 1 or int(x.shape[-1]) != 4 * filters:
            shortcut = self._track(f"{prefix}/a/proj/standardized_conv2d",
                                   self._conv(4 * filters, 1, stride, name=f"{tag}_proj"))(a)
        y = self._track(f"{prefix}/a/standardized_conv2d", self._conv(filters, 1, name=f"{tag}_a_conv"))(a)
        y = self._track(f"{prefix}/b/group_norm", GroupNormalization(name=f"{tag}_b_gn"))(y)
        y = keras.layers.ReLU()(y)
        y = _pad(3)(y)
        y = self._track(f"{prefix}/b/standardized_conv2d",
                        self._conv(filters, 3, stride, name=f"{tag}_b_conv"))(y)
        y = self._track(f"{prefix}/c/group_norm", GroupNormalization(name=f"{tag}_c_gn"))(y)
        y = keras.layers.ReLU()(y)
        y = self._track(f"{prefix}/c/standardized_conv2d", self._conv(4 * filters, 1, name=f"{tag}_c_conv"))(y)
        return keras.layers.Add()([y, shortcut])

    # -- weights by official name -------------------------------------------------------------------------

    def weight_names(self) -> list[str]:
        return list(self._named)

    @staticmethod
    def _npz_shape(name: str, variable: tf.Variable) -> tuple[int, ...]:
        """The head kernel is a 1×1 conv ``[1,1,F,C]`` in the checkpoints and a Dense ``[F,C]`` here."""
        shape = tuple(variable.shape)
        return (1, 1, *shape) if name == "resnet/head/conv2d/kernel" else shape

    def get_weights(self) -> dict[str, np.ndarray]:
        """All weights under their official names and checkpoint shapes."""
        return {name: var.numpy().reshape(self._npz_shape(name, var)) for name, var in self._named.items()}

    def set_weights(self, weights: dict[str, np.ndarray], source: str = "weights") -> None:
        """Assigns weights by official name; extra entries (a head the twin does not have) are ignored. With
        ``fold_standardization`` the convolution kernels are standardized on the way in."""
        missing = [name for name in self._named if name not in weights]
        if missing:
            raise CorruptModelError(
                f"{source} lacks {len(missing)} weights this {self.architecture.label} needs (first: {missing[0]}); "
                "is it a checkpoint of another architecture?"
            )
        for name, variable in self._named.items():
            value = np.asarray(weights[name], dtype=np.float32)
            if value.size != np.prod(variable.shape):
                raise CorruptModelError(
                    f"{source}: {name} has shape {value.shape}, this {self.architecture.label} needs "
                    f"{self._npz_shape(name, variable)}"
                )
            if self.fold_standardization and name.endswith("standardized_conv2d/kernel"):
                value = standardize_kernel(value)
            variable.assign(value.reshape(variable.shape))

    def save_npz(self, path: str | Path) -> None:
        np.savez(path, **self.get_weights())

    def load_npz(self, path: str | Path) -> None:
        self.set_weights(read_npz(path), source=str(path))

    # -- seeded weights -----------------------------------------------------------------------------------

    def seed(self, seed: int, centre_on: Callable[[], Iterator[np.ndarray]] | None = None) -> str:
        """Fills every weight deterministically from ``seed`` and returns a description of the recipe.

        A plainly random BiT ranks every photo alike, and its zero-mean random root filters are high-pass
        filters that amplify pixel noise (docs/stack-facts.md, "Seeded weights"). This recipe keeps rankings
        photo-specific and stable: conv kernels are N(0,1) (WS fixes their scale), the root's smoothed spatially
        (Gaussian, σ = 2 px) like a trained first layer's; GN γ = 1 + 0.1·N, β = 0.1·N, and the last GN of each residual
        branch ("c") is scaled by 0.1 as trained ResNets keep residual branches small; the head is N(0, 1/F) and,
        when ``centre_on`` yields image batches, its bias is −W·(mean feature), so logits are centred.
        Measured on R50x1 21k and the 9 held-apart photos: 9 distinct top-1 classes, mean pairwise logit
        cosine 0.13, and 0.01 input noise keeps every top-1 (logit cosine 0.999).
        Each weight draws from its own stream keyed by (seed, name): the same name gets the same values
        whatever else the architecture holds.
        """
        weights = {}
        for name, variable in self._named.items():
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            shape = self._npz_shape(name, variable)
            if name == "resnet/root_block/standardized_conv2d/kernel":
                value = _smooth_spatially(rng.standard_normal(shape), ROOT_SMOOTHING_SIGMA)
            elif name.endswith("/kernel") and "head" not in name:
                value = rng.standard_normal(shape)
            elif name.endswith("/gamma"):
                value = 1.0 + 0.1 * rng.standard_normal(shape)
            elif name.endswith("/beta"):
                value = 0.1 * rng.standard_normal(shape)
            elif name == "resnet/head/conv2d/kernel":
                value = rng.standard_normal(shape) / np.sqrt(shape[2])
            elif name == "resnet/head/conv2d/bias":
                value = np.zeros(shape)
            else:
                raise AssertionError(f"no seeding rule for {name}")
            if "/c/group_norm/" in name:
                value = value * RESIDUAL_BRANCH_SCALE
            weights[name] = value
        self.set_weights(weights, source="seeded weights")
        recipe = (
            f"seeded (seed={seed}): conv N(0,1) then weight-standardized, root smoothed (gaussian sigma "
            f"{ROOT_SMOOTHING_SIGMA:g} px); GN gamma=1+0.1N, beta=0.1N; residual-branch 'c' GN x{RESIDUAL_BRANCH_SCALE}"
        )
        if self.num_classes is None:
            return recipe
        recipe += "; head N(0,1/F)"
        if centre_on is not None:
            recipe += self._centre_head(centre_on)
        return recipe

    def _centre_head(self, batches: Callable[[], Iterator[np.ndarray]]) -> str:
        features = keras.Model(self.model.input, self.model.get_layer("features").output)
        feats = np.concatenate([features(batch, training=False).numpy() for batch in batches()])
        head = self.model.get_layer("head")
        kernel = head.kernel.numpy()
        head.bias.assign(-(feats.mean(axis=0) @ kernel))
        return f", bias centred on the mean feature of {len(feats)} calibration photos"
