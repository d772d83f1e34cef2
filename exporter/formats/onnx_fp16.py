"""fp16 ONNX models made by onnxruntime's float16 tool, from an fp32 file whose weights may be outside it.

The tool converts a model held in memory, and first runs ONNX shape inference on it, which serializes the whole
model and parses it back: on a BiT R101x3 (2.06 GB of fp32 weights) that held several copies of the weights and
took the export past 24 GB, and past 2 GiB protobuf cannot serialize it at all. When the fp32 file keeps its weights
in a data file beside it, the graph is loaded without them instead and its shapes inferred; each weight the tool
would convert is read from the data file (mapped), cast with the tool's own clamping, and written to the fp16 data
file one at a time; then the tool converts the rest (the small tensors inside the graph, the types, the float32
input and output casts) as it always does. The result is the model the tool makes in memory, tensor for tensor
(tests/test_onnx_external_data.py compares them on a tiny twin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubedge.exporter.formats import onnx_storage

__all__ = ["convert", "converted_weights"]


def convert(fp32: Path, data: Path) -> Any:
    """The fp16 model of the ONNX file ``fp32``, float32 input and output kept (``keep_io_types``). Where ``fp32``
    has a data file, the weights go to ``data`` (the fp16 model's data file, named as it will sit beside it) one at
    a time and the model returned holds its graph only; otherwise the tool converts the whole model in memory."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if not onnx_storage.data_file(fp32).is_file():
        return convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32), load_external_data=False))
    _cast_weights(model, fp32.parent, data)
    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)


def converted_weights(model: Any) -> set[str]:
    """The float32 initializers the float16 tool converts in ``model``: those read by a node outside its block list
    (it keeps a weight float32 only where every node that reads it stays float32). Nodes in subgraphs count as
    readers that stay float32, which keeps such weights out of the streamed cast (:func:`convert` refuses them)."""
    from onnx import TensorProto
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    floats = {tensor.name for tensor in model.graph.initializer if tensor.data_type == TensorProto.FLOAT}
    converted: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in DEFAULT_OP_BLOCK_LIST and not any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            converted |= floats & set(node.input)
    return converted


def _cast_weights(model: Any, folder: Path, data: Path) -> None:
    """Casts each external float32 weight of ``model`` the tool would convert, writing it to ``data``; a weight
    the tool would keep float32 (or that a subgraph reads) cannot be streamed, and is refused."""
    from onnx import TensorProto
    from onnx.external_data_helper import uses_external_data
    from onnxruntime.transformers.float16 import convert_np_to_float16

    from hubedge.runtimes.errors import HubedgeError

    converted = converted_weights(model)
    outside = [tensor for tensor in model.graph.initializer
               if tensor.data_type == TensorProto.FLOAT and uses_external_data(tensor)]
    kept = [tensor.name for tensor in outside if tensor.name not in converted]
    if kept:
        raise HubedgeError(f"the fp16 tool would keep {len(kept)} large float32 weight(s) of this ONNX graph "
                           f"({', '.join(kept[:3])}), which hubedge converts only in memory; export onnx fp32, or "
                           "raise --onnx-external-data-above so that the model is converted whole")
    data.unlink(missing_ok=True)
    with open(data, "wb") as out:
        for tensor in outside:
            values = onnx_storage.read_external(tensor, folder)
            onnx_storage.write_external(tensor, convert_np_to_float16(values), out, data.name)
