"""ONNX graph rewrites into ops that mobile accelerators take, each an equal formulation of what it replaces.

Why: ONNX Runtime Mobile hands a graph to NNAPI or CoreML in partitions of the ops each supports, and every op it
lacks splits the graph and sends tensors back to the CPU (``hubedge.exporter.verify.deployability`` measures it). BiT's
GroupNorm computes ``1/sqrt(var + eps)``, which tf2onnx writes as ``Reciprocal``: NNAPI has no ``Reciprocal``, so a
BiT ONNX file fell into one NNAPI partition per GroupNorm. Its stem pads the root convolution's output with zeros
before the max pool, a ``Pad`` that CoreML's MLProgram lacks. Both have formulations in ops every provider takes:

- ``Reciprocal(x)`` is ``Div(1, x)``: the same IEEE division.
- a zero ``Pad`` of a tensor whose shape is static (``--batch 1``) is a ``Concat`` with zero tensors of the padded
  sizes along each padded axis: the same values in the same places.

Each rewrite is recorded in the manifest's recipe; verification against the FP32 reference judges the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mobile_friendly"]


def mobile_friendly(model: Any) -> tuple[Any, dict[str, int]]:
    """``model`` with the rewrites above applied where they hold, and how many of each were made."""
    import onnx

    counts = {"reciprocal_to_div": _reciprocals_to_div(model)}
    # a Pad is rewritten only where its input's shape is static, which needs every shape inferred: on a copy of the
    # whole model, weights included, so only where a Pad can be rewritten at all (a fixed batch)
    inputs = [value.type.tensor_type.shape.dim for value in model.graph.input]
    if any(node.op_type == "Pad" for node in model.graph.node) and all(
            dim.HasField("dim_value") for dims in inputs for dim in dims):
        counts["zero_pad_to_concat"] = _zero_pads_to_concat(
            model, _static_shapes(onnx.shape_inference.infer_shapes(model)))
    return model, {name: count for name, count in counts.items() if count}


def _reciprocals_to_div(model: Any) -> int:
    from onnx import numpy_helper

    graph, done = model.graph, 0
    for node in graph.node:
        if node.op_type != "Reciprocal" or node.domain not in ("", "ai.onnx"):
            continue
        one = f"{node.name or node.output[0]}/one"
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
        node.op_type = "Div"
        node.input[:] = [one, node.input[0]]
        del node.attribute[:]
        done += 1
    return done


def _static_shapes(model: Any) -> dict[str, list[int]]:
    """Each value's shape where every dimension of it is a number."""
    shapes = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = [dim.dim_value for dim in dims]
    return shapes


def _zero_pads_to_concat(model: Any, shapes: dict[str, list[int]]) -> int:
    from onnx import helper, numpy_helper

    graph = model.graph
    read = {name for node in graph.node if node.op_type == "Pad" for name in node.input[1:]}
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer if tensor.name in read}
    replaced, dropped, done = [], [], 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx"):
            continue
        mode = next((attr.s.decode() for attr in node.attribute if attr.name == "mode"), "constant")
        inputs = list(node.input) + [""] * (4 - len(node.input))
        data, pads_name, value_name, axes_name = inputs[:4]
        if mode != "constant" or axes_name or pads_name not in constants or data not in shapes:
            continue
        value = constants.get(value_name, np.zeros(1, np.float32)) if value_name else np.zeros(1, np.float32)
        pads, shape = [int(p) for p in constants[pads_name]], list(shapes[data])
        if np.any(value != 0) or min(pads) < 0 or len(pads) != 2 * len(shape):
            continue
        nodes, current = [], data
        for axis in range(len(shape)):
            before, after = pads[axis], pads[axis + len(shape)]
            if not before and not after:
                continue
            parts = []
            for side, width in (("before", before), ("after", after)):
                if width:
                    zeros = f"{node.name}/zeros_{axis}_{side}"
                    graph.initializer.append(numpy_helper.from_array(
                        np.zeros([*shape[:axis], width, *shape[axis + 1:]], np.float32), zeros))
                    parts.append((side, zeros))
            ordered = [name for side, name in parts if side == "before"] + [current] + \
                      [name for side, name in parts if side == "after"]
            output = node.output[0] if axis == max(a for a in range(len(shape)) if pads[a] or pads[a + len(shape)]) \
                else f"{node.name}/padded_{axis}"
            nodes.append(helper.make_node("Concat", ordered, [output], name=f"{node.name}/concat_{axis}", axis=axis))
            shape[axis] += before + after
            current = output
        replaced.append((index, nodes))
        dropped += [pads_name, value_name] if value_name else [pads_name]
        done += 1
    for index, nodes in reversed(replaced):  # in place of each Pad, keeping the graph's order
        del graph.node[index]
        for offset, new in enumerate(nodes):
            graph.node.insert(index + offset, new)
    # the replaced Pads' constants, if nothing reads them now (ONNX Runtime warns of each unused one at load); a
    # graph with subgraphs keeps them, as a subgraph may read an outer constant by name
    unread = set(dropped) - {name for node in graph.node for name in node.input}
    if unread and not any(attr.type in (attr.GRAPH, attr.GRAPHS) for node in graph.node for attr in node.attribute):
        kept = [tensor for tensor in graph.initializer if tensor.name not in unread]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return done
