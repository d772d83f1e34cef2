"""The ``tflite`` format: LiteRT flatbuffers at fp32, fp16, dynamic-range and full int8.

Converted from the hub-form SavedModel's ``__call__`` traced at a fixed ``[1, size, size, 3]`` input: mobile
runtimes run one image at a time, and a fully static graph keeps XNNPACK in one partition (PITFALLS.md).
The LiteRT adapter splits larger batches. Full int8 uses a representative dataset from the calibration set
and integer kernels for every op; ``int8_io`` also makes the input and output tensors int8 (their scale and
zero point go into the manifest, and the adapter applies them). The model's contract and labels go into the
flatbuffer's own metadata list (``hubedge.model``, ``hubedge.labels``), so an app needs only the one file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from exporter.formats import FormatResult
from exporter.sources import LoadedModel


def _converter(loaded: LoadedModel, size: int):
    import tensorflow as tf

    module = loaded.module()
    # A restored function keeps the shapes it was saved with ([None, None, None, 3]); calling it from a new
    # function with a static signature lets the converter's shape inference make every tensor static.
    fixed = tf.function(lambda images: module(images),
                        input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    return tf.lite.TFLiteConverter.from_concrete_functions([fixed.get_concrete_function()], module)


def export(loaded: LoadedModel, precision: str, target: Path, options: dict[str, Any]) -> FormatResult:
    import tensorflow as tf

    size = loaded.info.input_size
    converter = _converter(loaded, size)
    recipe: dict[str, Any] = {"method": "none (fp32)"}
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        recipe = {"method": "fp16 weights (dequantized to fp32 at load, or run in fp16 by GPU delegates)"}
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        recipe = {"method": "dynamic range: int8 weights (per-channel), activations quantized on the fly"}
    elif precision == "int8":
        calibration = options["calibration"]()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([batch] for batch in calibration.batches(1))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        int8_io = bool(options.get("int8_io"))
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        recipe = {
            "method": "full integer post-training quantization (TFLite converter)",
            "weights": "int8 per-channel (symmetric)",
            "activations": "int8 per-tensor (asymmetric), ranges from the representative dataset",
            "io": "int8" if int8_io else "float32",
            "calibration": calibration.record,
        }
    target.write_bytes(with_metadata(converter.convert(), metadata_entries(loaded, precision)))
    return FormatResult(input_shape=[1, size, size, 3], recipe=recipe,
                        tools=("tensorflow", "ai-edge-litert"), io=_io_quantization(target))


def metadata_entries(loaded: LoadedModel, precision: str) -> dict[str, bytes]:
    """What a mobile app needs from the file alone: the model's contract, its preprocessing and its labels."""
    info = loaded.info
    entries = {
        "hubedge.model": json.dumps({
            **info.to_dict(), "precision": precision, "weights": loaded.weights.get("source", ""),
            "preprocessing": f"RGB float32 in [0,1], NHWC, centre square crop, resize to {info.input_size}",
        }).encode(),
    }
    if info.labels:
        from runtimes.labels import load_labels

        entries["hubedge.labels"] = "\n".join(load_labels(info.labels).lemmas).encode()
    return entries


def with_metadata(content: bytes, entries: dict[str, bytes]) -> bytes:
    """Adds named entries to the flatbuffer's own ``metadata`` list (TF's flatbuffer_utils, schema types)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = model.metadata or []
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def read_metadata(path: Path) -> dict[str, bytes]:
    """The named metadata entries of a .tflite file."""
    from tensorflow.lite.python import schema_py_generated as schema

    content = bytearray(path.read_bytes())
    model = schema.Model.GetRootAsModel(content, 0)
    entries = {}
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        entries[meta.Name().decode()] = model.Buffers(meta.Buffer()).DataAsNumpy().tobytes()
    return entries


def _io_quantization(path: Path) -> dict[str, Any]:
    """Scale and zero point of integer input/output tensors (empty for float I/O), for the manifest."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    io: dict[str, Any] = {}
    for role, details in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        if details["dtype"].__name__ in ("int8", "uint8"):
            scale, zero_point = details["quantization"]
            io[role] = {"dtype": details["dtype"].__name__, "scale": float(scale), "zero_point": int(zero_point)}
    return io
