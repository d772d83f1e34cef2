"""How close to FP32 can any int8 artifact of EfficientNet-Lite0 get? The floor set by its weights alone.

Every int8 route hubedge has (TFLite, ONNX QDQ, OpenVINO/NNCF, qnn) rounds the batch-norm-folded conv weights
to int8, per output channel and symmetric, to the nearest step. This script applies exactly that to the
trained weights and keeps every activation in float32, then judges the model on the export's evaluation set
(the 45 held-apart images) against the float model. No activation calibration can do better than this.

It prints the floor at 8, 10 and 12 weight bits, each layer's own cost (only that layer in int8), and the
floor with the most costly layers kept float. Reproduce (≈1 minute, needs the ``yardstick`` extra):

    .venv/bin/python benchmarks/records/efficientnet_lite0_weight_floor.py

The figures are in ``efficientnet-lite0-int8-weight-floor.md`` beside this file.
"""

from __future__ import annotations

import numpy as np

from hubedge.exporter.sources import catalog, efficientnet_lite
from hubedge.exporter.pipeline import evaluation_set
from hubedge.exporter.sources.torch_legacy import load_legacy_state_dict
from hubedge.runtimes.agreement import summarize

BLOCK_BN = {"_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2"}
KEPT_FLOAT = (0, 1, 2, 3, 5)


def batch_norm_of(weight: str) -> str:
    """The batch norm folded into a conv: ``_blocks.3._project_conv.weight`` → ``_blocks.3._bn2``."""
    module = weight.rsplit(".", 1)[0]
    if module in ("_conv_stem", "_conv_head"):
        return {"_conv_stem": "_bn0", "_conv_head": "_bn1"}[module]
    block, conv = module.rsplit(".", 1)
    return f"{block}.{BLOCK_BN[conv]}"


def round_per_channel(weights: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel round-to-nearest, as the converters quantize conv weights."""
    flat = weights.reshape(len(weights), -1)
    scale = np.abs(flat).max(axis=1) / (2 ** (bits - 1) - 1)
    scale[scale == 0] = 1.0
    return (np.round(flat / scale[:, None]) * scale[:, None]).reshape(weights.shape)


def quantized_state(state: dict[str, np.ndarray], layers: list[str], bits: int = 8) -> dict[str, np.ndarray]:
    """``state`` with the weights of ``layers`` rounded as the converters would round them after BN folding."""
    result = dict(state)
    for name in layers:
        if name == "_fc.weight":
            result[name] = round_per_channel(state[name], bits)
            continue
        bn = batch_norm_of(name)
        factor = (state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + efficientnet_lite.BN_EPSILON))
        factor = factor[:, None, None, None]
        safe = np.where(factor == 0, 1.0, factor)
        result[name] = round_per_channel(state[name] * factor, bits) / safe
    return result


def main() -> None:
    state = load_legacy_state_dict(efficientnet_lite.package_weights_file())
    images = evaluation_set(catalog.get("efficientnet-lite0").input_size)
    model = efficientnet_lite.build(1000)
    layers = [name for name in state if name.endswith("conv.weight") or name == "_conv_stem.weight"] + ["_fc.weight"]
    efficientnet_lite.load_torch_state(model, state, "weight-floor")
    reference = model.predict(images.images, verbose=0)  # the float model: what every variant is judged against

    def figures(weights: dict[str, np.ndarray]) -> dict[str, float]:
        efficientnet_lite.load_torch_state(model, weights, "weight-floor")
        return summarize(reference, model.predict(images.images, verbose=0), "classification", "softmax")

    def line(label: str, f: dict[str, float]) -> str:
        return f"| {label} | {f['top1']:.3f} | {f['top5']:.3f} | {f['cosine_min']:.4f} | {f['sqnr_db']:.1f} |"

    print(f"{images.description}\n\n| weights | top-1 | top-5 | cosine_min | SQNR dB |\n| --- | --- | --- | --- | --- |")
    for bits in (8, 10, 12):
        print(line(f"every conv and the head at int{bits}", figures(quantized_state(state, layers, bits))))
    costs = sorted((figures(quantized_state(state, [name]))["sqnr_db"], name) for name in layers)
    print("\n| only this layer at int8 | SQNR dB |\n| --- | --- |")
    for sqnr, name in costs[:8]:
        print(f"| `{name}` | {sqnr:.1f} |")
    print("\n| int8 but the k costliest layers | top-1 | top-5 | cosine_min | SQNR dB |\n| --- | --- | --- | --- | --- |")
    for keep in KEPT_FLOAT:
        kept = [name for _, name in costs[:keep]]
        print(line(f"k = {keep}", figures(quantized_state(state, [n for n in layers if n not in kept]))))


if __name__ == "__main__":
    main()
