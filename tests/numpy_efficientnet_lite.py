"""A plain numpy EfficientNet-Lite0 forward pass straight from the PyTorch state dict, in float64.

It shares nothing with ``hubedge.exporter.sources.efficientnet_lite`` but the stage table (from the paper): its own
layout transposes, its own TF "SAME" padding and its own convolutions, so a wrong transpose or padding in the
Keras builder shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np

STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TF SAME: output ceil(in / stride); the odd pixel of padding goes after (bottom / right)."""
    padding = []
    for size in x.shape[:2]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        padding.append((total // 2, total - total // 2))
    return np.pad(x, padding + [(0, 0)])


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[H', W', C, k, k] patches of an HWC image, SAME-padded."""
    patches = np.lib.stride_tricks.sliding_window_view(_same_pad(x, kernel, stride), (kernel, kernel), axis=(0, 1))
    return patches[::stride, ::stride]


def conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """Dense conv; ``weight`` in PyTorch's (out, in, kh, kw)."""
    return np.einsum("hwcij,ocij->hwo", _windows(x, weight.shape[-1], stride), weight, optimize=True)


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise conv; ``weight`` in PyTorch's (channels, 1, kh, kw)."""
    return np.einsum("hwcij,cij->hwc", _windows(x, weight.shape[-1], stride), weight[:, 0], optimize=True)


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str, eps: float = 1e-3) -> np.ndarray:
    g, b = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
    mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
    return (x - mean) / np.sqrt(var + eps) * g + b


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def forward(state: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """Logits (1000) of one HWC float image in [0, 1]."""
    state = {k: v.astype(np.float64) for k, v in state.items()}
    x = (image.astype(np.float64) * 255.0 - 127.0) / 128.0
    x = relu6(batch_norm(conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    index, channels = 0, 32
    for kernel, stride, expand, out, repeats in STAGES:
        for repeat in range(repeats):
            p, step, inputs = f"_blocks.{index}", stride if repeat == 0 else 1, x
            if expand != 1:
                x = relu6(batch_norm(conv(x, state[f"{p}._expand_conv.weight"]), state, f"{p}._bn0"))
            x = relu6(batch_norm(depthwise(x, state[f"{p}._depthwise_conv.weight"], step), state, f"{p}._bn1"))
            x = batch_norm(conv(x, state[f"{p}._project_conv.weight"]), state, f"{p}._bn2")
            if step == 1 and channels == out:
                x = x + inputs
            index, channels = index + 1, out
    x = relu6(batch_norm(conv(x, state["_conv_head.weight"]), state, "_bn1"))
    return x.mean(axis=(0, 1)) @ state["_fc.weight"].T + state["_fc.bias"]
