"""tf2onnx in a child process, with the model's weights kept out of TensorFlow's graph passes.

Run by the ``onnx`` format as ``python -m hubedge.exporter.formats.tf2onnx_child --saved-model DIR --size N --opset K
--output FILE --external-data-above BYTES`` (the default route), or with ``--weights-in-graph`` for the previous
route, kept for comparison.

Why (figures: ``benchmarks/records/tf2onnx-memory.md``): tf2onnx's command line freezes the variables into a
GraphDef and runs grappler on it, which holds many copies of the weights at once, and none of that work needs
the weights' values. So the default route:

1. traces the SavedModel's ``__call__`` at ``[batch, size, size, 3]`` and freezes it with TensorFlow's
   ``convert_variables_to_constants_v2``; this is the route's peak memory;
2. takes every floating constant of at least ``MIN_WEIGHT_VALUES`` values out of the GraphDef and puts a
   placeholder of the same dtype and shape in its place, so that tf2onnx and its grappler pass see a graph of
   a few hundred kilobytes;
3. converts that graph with tf2onnx and puts the weights back as ONNX initializers;
4. folds what was computed from the weights (weight standardization, the HWIO → OIHW transposes) into
   constants with ONNX Runtime's *basic* graph optimizations: constant folding and fusions into standard ONNX
   ops, so the saved model stays portable.

``--weights-in-graph`` runs tf2onnx's own command line on the SavedModel, as before, and calls
``gc.collect()`` before each ONNX optimizer. The reason: tf2onnx deep-copies the graph before each optimizer,
and those copies are reference cycles. It hooks tf2onnx's private optimizer table; if
a later tf2onnx lacks that table, the route still runs, at the old peak.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.formats.onnx import INPUT_NAME, OUTPUT_NAME, PEAK_RSS_LINE

MIN_WEIGHT_VALUES = 4096  # smaller constants (shapes, axes, epsilons, GroupNorm's ones) stay in the graph


def own_peak_rss_bytes() -> int:
    """This process's own RSS high-water mark (VmHWM).

    Why not the ``ru_maxrss`` the parent gets from ``wait4``: on Linux a child's ``ru_maxrss`` keeps the
    high-water mark of the memory it forked from across ``exec``, so it reports the parent's RSS whenever the
    parent is larger (``benchmarks/records/tf2onnx-memory.md``).
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def collect_between_optimizers() -> bool:
    """Makes each tf2onnx optimizer start with the previous one's garbage freed; False if the hook is gone."""
    from tf2onnx import optimizer

    table = getattr(optimizer, "_get_optimizers", None)
    if table is None:
        return False

    def collected(factory: Callable[[], Any]) -> Callable[[], Any]:
        def make() -> Any:
            gc.collect()
            return factory()

        return make

    optimizer._get_optimizers = lambda: {name: collected(factory) for name, factory in table().items()}
    return True


def frozen_graph(savedmodel: str, size: int) -> tuple[Any, str, str]:
    """The SavedModel's ``__call__`` at ``[batch, size, size, 3]`` as a frozen GraphDef, its input and output."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    module = tf.saved_model.load(savedmodel)
    traced = tf.function(lambda images: module(images),
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    return graph_def, frozen.inputs[0].name, frozen.outputs[0].name


def take_out_weights(graph_def: Any) -> dict[str, np.ndarray]:
    """Replaces each large floating constant of ``graph_def`` by a placeholder; returns them by tensor name."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_shape_pb2, types_pb2

    floating = {types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_DOUBLE}
    weights = {}
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is None or tensor.dtype not in floating:
            continue
        if int(np.prod([dim.size for dim in tensor.tensor_shape.dim])) < MIN_WEIGHT_VALUES:
            continue
        values, dtype = tf.make_ndarray(tensor), tensor.dtype
        weights[f"{node.name}:0"] = values
        node.op = "Placeholder"
        node.attr.clear()
        node.attr["dtype"].type = dtype
        node.attr["shape"].shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in values.shape]))
    return weights


def put_weights_back(model: Any, weights: dict[str, np.ndarray]) -> None:
    """Turns the weight placeholders, graph inputs after conversion, back into initializers."""
    from onnx import numpy_helper

    graph = model.graph
    inputs = [value for value in graph.input if value.name not in weights]
    present = {value.name for value in graph.input} & set(weights)
    graph.initializer.extend(numpy_helper.from_array(weights[name], name) for name in sorted(present))
    del graph.input[:]
    graph.input.extend(inputs)


def fold_constants(model: Any, output: str, external_above: int) -> None:
    """Saves ``model`` at ``output`` with what depends only on initializers folded (ONNX Runtime, basic level), its
    weights beside it in a data file from ``external_above`` bytes on (``hubedge.exporter.formats.onnx_storage``).

    ONNX Runtime reads the model from memory when it serializes (under 2 GiB of weights); otherwise from a
    scratch file with external data, and then it writes the folded weights to a data file of its own."""
    import onnx
    import onnxruntime as ort

    from hubedge.exporter.formats import onnx_storage

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = output
    target = Path(output)
    if onnx_storage.weights_bytes(model) < external_above:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    else:
        unfolded = target.with_name(target.name.replace(".onnx", ".unfolded.onnx"))
        onnx_storage.save(model, unfolded, 0)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         onnx_storage.data_file(target).name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(onnx_storage.MIN_EXTERNAL_TENSOR))
        try:
            ort.InferenceSession(str(unfolded), options, providers=["CPUExecutionProvider"])
        finally:
            unfolded.unlink(missing_ok=True)
            onnx_storage.data_file(unfolded).unlink(missing_ok=True)
    folded = onnx.load(output)  # with its data file's weights, if ONNX Runtime wrote one
    used = {node.domain for node in folded.graph.node} | {""}
    kept = [opset for opset in folded.opset_import if opset.domain in used]  # ORT lists every domain it knows
    del folded.opset_import[:]
    folded.opset_import.extend(kept)
    onnx_storage.save(folded, target, external_above)


def convert_weights_out(savedmodel: str, size: int, opset: int, output: str, external_above: int) -> None:
    from tf2onnx import convert

    graph_def, source, sink = frozen_graph(savedmodel, size)
    gc.collect()  # the loaded SavedModel and the frozen function's graph
    weights = take_out_weights(graph_def)
    model, _ = convert.from_graph_def(graph_def, input_names=[source, *weights], output_names=[sink], opset=opset,
                                      tensors_to_rename={source: INPUT_NAME, sink: OUTPUT_NAME})
    del graph_def
    put_weights_back(model, weights)
    weights.clear()
    fold_constants(model, output, external_above)


def convert_weights_in_graph(savedmodel: str, size: int, opset: int, output: str, external_above: int) -> None:
    """tf2onnx's own command line, the weights in the file whatever ``external_above`` (its ``--large_model``
    writes a zip, which ONNX Runtime does not open); the parent stores them as the threshold says."""
    collect_between_optimizers()
    from tf2onnx import convert

    sys.argv = ["tf2onnx.convert", "--saved-model", savedmodel, "--signature_def", "serving_default", "--opset",
                str(opset), "--inputs", f"{INPUT_NAME}:0[-1,{size},{size},3]", "--rename-inputs", INPUT_NAME,
                "--rename-outputs", OUTPUT_NAME, "--output", output]
    convert.main()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m hubedge.exporter.formats.tf2onnx_child")
    parser.add_argument("--saved-model", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--opset", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights-in-graph", action="store_true")
    parser.add_argument("--external-data-above", type=int, required=True)
    args = parser.parse_args(argv)
    route = convert_weights_in_graph if args.weights_in_graph else convert_weights_out
    route(args.saved_model, args.size, args.opset, args.output, args.external_data_above)
    print(f"{PEAK_RSS_LINE}{own_peak_rss_bytes()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
