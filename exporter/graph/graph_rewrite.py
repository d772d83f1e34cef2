"""General graph rewrites for the as-is route: 5-D GroupNorm arithmetic re-expressed in 4-D.

Models hubedge does not re-author still often write GroupNorm the way Keras' ``GroupNormalization``, TF Addons
and the BiT authors do: reshape ``[N, H, W, C]`` to ``[N, H, W, G, C/G]`` (the shape built from ``tf.shape``
at run time), take moments over axes 1, 2 and 4, normalize, and reshape back. Every converter keeps that 5-D
detour (``benchmarks/records/published-graph.md``: NHWC↔NCHW transposes that cannot pass the reshape, run-time
shape chains, 5-D reductions), and it costs 1.4–2.4× on every runtime.

This rewrite finds each such site in the frozen graph and computes the same thing in 4-D, the way the edge
builder does: per-channel means over H and W, averaged within each group on the small ``[N, 1, 1, C]``
statistics tensor and broadcast back to its channels, so the whole activation never leaves 4-D. It is a
rewrite of the arithmetic, not of the model: it never needs to know what the model is. A site is rewritten
only when every step between the two reshapes is one it can lift (element-wise ops, moments over the grouped
axes, constants that broadcast per channel or per group) and both reshapes provably split and rejoin just the
channel axis; anything else is left exactly as it is and counted. The rewritten graph must then equal the
module on held-apart photos before export uses it (``hubedge.exporter.graph.reauthor``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

REWRITE_VERSION = 1  # bump when the rewritten graph changes, to invalidate cached rewrites
BINARY = {"AddV2", "Add", "Sub", "Mul", "RealDiv", "SquaredDifference", "Maximum", "Minimum"}
UNARY = {"Identity", "StopGradient", "Rsqrt", "Sqrt", "Square", "Neg", "Reciprocal"}
ACTIVATION, STATISTIC, CONSTANT = "activation", "statistic", "constant"  # the kinds of tensor inside a site


@dataclasses.dataclass
class Site:
    """One 5-D GroupNorm: the reshape into groups, the ops up to the reshape(s) back, and what each computes."""

    reshape_in: Any  # tf.Operation
    groups: int
    size: int  # channels per group
    ops: list[Any]  # in graph order, the reshape in and out included
    constants: dict[str, np.ndarray]  # tensor name -> value, for inputs from outside the site
    outputs: list[Any]  # the reshape(s) back to 4-D

    @property
    def channels(self) -> int:
        return self.groups * self.size


@dataclasses.dataclass
class Rewrite:
    """What :func:`rewrite_group_norms` did: the rewritten GraphDef, how many sites, and why others stayed."""

    graph_def: Any
    rewritten: int
    left: list[str]


class _NotASite(Exception):
    """This 5-D reshape does not start a GroupNorm the rewrite can lift; the message says why."""


def rewrite_group_norms(graph_def: Any, input_name: str, output_name: str) -> Rewrite:
    """``graph_def`` (frozen: weights are constants) with every liftable 5-D GroupNorm computed in 4-D.

    ``input_name`` and ``output_name`` are the tensors the model is called through; nodes nothing reaches
    from the output any more (the run-time shape chains) are dropped."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    source = graph.get_tensor_by_name(input_name).op
    depends_on_input = _forward_closure(source)
    sites, left = [], []
    for op in graph.get_operations():
        if op.type != "Reshape" or not _splits_channels(op):
            continue
        try:
            sites.append(_site(op, depends_on_input))
        except _NotASite as why:
            left.append(f"{op.name}: {why}")
    if not sites:
        return Rewrite(graph_def, 0, left)
    replaced = {op.name for site in sites for op in site.ops}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(node for node in graph_def.node if node.name not in replaced)
    for site in sites:
        out.node.extend(_lifted_nodes(site))
    output_node = output_name.split(":")[0]
    pruned = tf.compat.v1.graph_util.extract_sub_graph(out, [output_node])
    return Rewrite(pruned, len(sites), left)


def _forward_closure(op: Any) -> set[str]:
    """Names of every op that depends on ``op``."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        stack.extend(consumer for output in current.outputs for consumer in output.consumers())
    return seen


def _splits_channels(op: Any) -> bool:
    """A reshape of a 4-D tensor with known channels into 5-D whose last two dims multiply to them."""
    before, after = op.inputs[0].shape, op.outputs[0].shape
    if before.rank != 4 or after.rank != 5 or before[3] is None or after[3] is None or after[4] is None:
        return False
    return after[3] * after[4] == before[3] and after[3] > 1


def _dims(tensor: Any, x: Any) -> list | None:
    """The values of a shape tensor as ints or ``("dim", i)`` (the i-th run-time dim of ``x``), when it is built
    from constants and ``tf.shape(x)`` in ways this can follow; None otherwise."""
    from tensorflow.python.framework import tensor_util

    op = tensor.op
    if op.type == "Const":
        return [int(v) for v in np.atleast_1d(tensor_util.MakeNdarray(op.get_attr("value")))]
    if op.type == "Identity":
        return _dims(op.inputs[0], x)
    if op.type == "Shape" and op.inputs[0].name == x.name:
        return [x.shape[i] if x.shape[i] is not None else ("dim", i) for i in range(x.shape.rank)]
    if op.type == "ConcatV2":
        axis = _dims(op.inputs[-1], x)
        parts = [_dims(part, x) for part in op.inputs[:-1]]
        if axis not in ([0], [-1]) or any(part is None for part in parts):
            return None
        return [value for part in parts for value in part]
    if op.type == "Pack" and op.get_attr("axis") == 0:
        parts = [_dims(part, x) for part in op.inputs]
        return None if any(part is None or len(part) != 1 for part in parts) else [part[0] for part in parts]
    if op.type == "FloorDiv":
        a, b = _dims(op.inputs[0], x), _dims(op.inputs[1], x)
        if a and b and len(a) == len(b) == 1 and isinstance(a[0], int) and isinstance(b[0], int) and b[0]:
            return [a[0] // b[0]]
        return None
    if op.type == "StridedSlice":
        base = _dims(op.inputs[0], x)
        bounds = [_dims(op.inputs[i], x) for i in (1, 2, 3)]
        if base is None or any(b is None or len(b) != 1 for b in bounds):
            return None
        if op.get_attr("ellipsis_mask") or op.get_attr("new_axis_mask"):
            return None
        begin, end, stride = (b[0] for b in bounds)
        if not all(isinstance(v, int) for v in (begin, end, stride)):
            return None
        begin = None if op.get_attr("begin_mask") & 1 else begin
        end = None if op.get_attr("end_mask") & 1 else end
        if op.get_attr("shrink_axis_mask") & 1:
            return [base[begin]] if begin is not None and -len(base) <= begin < len(base) else None
        return base[begin:end:stride]
    return None


def _same_leading_dims(dims: list | None, x: Any, count: int) -> bool:
    """Whether the first ``count`` values of a shape are provably ``x``'s first ``count`` dims (one -1 may stand
    for a dim when the rest, channels included, are proved: the reshape then infers exactly that dim)."""
    if dims is None:
        return False
    wildcards = 0
    for i in range(count):
        value, known = dims[i], x.shape[i]
        if value == ("dim", i) or (known is not None and value == known):
            continue
        if value == -1:
            wildcards += 1
            continue
        return False
    return wildcards <= 1


def _site(reshape_in: Any, depends_on_input: set[str]) -> Site:
    """Follows a reshape into groups forward to the reshape(s) back, classifying every tensor on the way."""
    x = reshape_in.inputs[0]
    groups, size = int(reshape_in.outputs[0].shape[3]), int(reshape_in.outputs[0].shape[4])
    if not _same_leading_dims(_dims(reshape_in.inputs[1], x), x, 3):
        raise _NotASite("the reshape into groups does not keep the batch and spatial dims")
    found, stack = {reshape_in.name: reshape_in}, [reshape_in]
    while stack:  # everything downstream of the reshape into groups, up to and including each reshape back
        op = stack.pop()
        if op is not reshape_in and op.type == "Reshape":
            continue
        for consumer in (c for output in op.outputs for c in output.consumers()):
            if consumer.name not in found:
                found[consumer.name] = consumer
                stack.append(consumer)
    order = {op.name: i for i, op in enumerate(reshape_in.graph.get_operations())}
    ops = sorted(found.values(), key=lambda op: order[op.name])
    kinds = {reshape_in.outputs[0].name: ACTIVATION}
    constants: dict[str, np.ndarray] = {}
    for op in ops[1:]:
        kinds[op.outputs[0].name] = _classify(op, kinds, constants, depends_on_input, x, groups, size)
    outputs = [op for op in ops[1:] if op.type == "Reshape"]
    if not outputs:
        raise _NotASite("no reshape back to 4-D")
    return Site(reshape_in, groups, size, ops, constants, outputs)


def _classify(op: Any, kinds: dict[str, str], constants: dict[str, np.ndarray], depends_on_input: set[str], x: Any,
              groups: int, size: int) -> str:
    """The kind of ``op``'s output; raises :class:`_NotASite` for anything the rewrite cannot lift."""
    if op.type == "Reshape":
        if kinds.get(op.inputs[0].name) != ACTIVATION or op.outputs[0].shape.rank != 4:
            raise _NotASite(f"{op.name} reshapes something other than the grouped activation back to 4-D")
        if not _same_leading_dims(_dims(op.inputs[1], x), x, 4):
            raise _NotASite(f"{op.name} does not reshape back to the input's own shape")
        return ACTIVATION
    if op.type == "Mean":
        axes = constants_of(op.inputs[1])
        if kinds.get(op.inputs[0].name) != ACTIVATION or not op.get_attr("keep_dims"):
            raise _NotASite(f"{op.name} is a mean the rewrite cannot lift")
        if sorted(int(a) % 5 for a in np.atleast_1d(axes)) != [1, 2, 4]:
            raise _NotASite(f"{op.name} averages over axes {np.atleast_1d(axes).tolist()}, not the group's 1, 2, 4")
        return STATISTIC
    if op.type not in BINARY | UNARY or len(op.outputs) != 1:
        raise _NotASite(f"{op.name} is a {op.type}, which the rewrite does not lift")
    found = []
    for tensor in op.inputs:
        if tensor.name not in kinds:
            if tensor.op.name in depends_on_input:
                raise _NotASite(f"{op.name} also reads {tensor.name}, which the site does not compute")
            constants[tensor.name] = _per_channel(constants_of(tensor), groups, size, op.name)
            kinds[tensor.name] = CONSTANT
        found.append(kinds[tensor.name])
    return ACTIVATION if ACTIVATION in found else STATISTIC if STATISTIC in found else CONSTANT


def constants_of(tensor: Any) -> np.ndarray:
    """The value of a tensor computed from constants alone (folded here, never run: the frozen graph carries
    control edges from the model's input, and a session would want it fed)."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    op = tensor.op
    if op.type == "Const":
        return tensor_util.MakeNdarray(op.get_attr("value"))
    if op.type in ("Identity", "StopGradient", "Snapshot"):
        return constants_of(op.inputs[0])
    if op.type == "Reshape":
        return constants_of(op.inputs[0]).reshape(constants_of(op.inputs[1]))
    value = tf.get_static_value(tensor)
    if value is None:
        raise _NotASite(f"{tensor.name} is not a constant")
    return np.asarray(value)


def _per_channel(value: np.ndarray, groups: int, size: int, where: str) -> np.ndarray:
    """A constant that broadcasts against ``[N, H, W, G, C/G]`` as the equal one against ``[N, H, W, C]``: a
    scalar stays one; a per-group or per-channel value becomes a ``[C]`` vector."""
    if value.ndim > 5:
        raise _NotASite(f"{where} reads a {value.ndim}-D constant")
    shape = (1,) * (5 - value.ndim) + value.shape
    if shape[:3] != (1, 1, 1) or shape[3] not in (1, groups) or shape[4] not in (1, size):
        raise _NotASite(f"{where} reads a constant of shape {list(value.shape)}, which is not per group or channel")
    if shape[3] == shape[4] == 1:
        return value.reshape(())
    return np.ascontiguousarray(np.broadcast_to(value.reshape(shape)[0, 0, 0], (groups, size)).reshape(-1))


def _lifted_nodes(site: Site) -> list[Any]:
    """The NodeDefs that compute ``site`` in 4-D; each reshape back becomes an Identity of its own name, so every
    consumer outside the site reads the same tensor name as before."""
    from tensorflow.core.framework import node_def_pb2

    nodes: list[Any] = []
    scope = f"{site.reshape_in.name}/hubedge_4d"
    lifted = {site.reshape_in.outputs[0].name: _input_name(site.reshape_in.inputs[0])}
    dtype = site.reshape_in.get_attr("T")

    def const(name: str, value: np.ndarray, as_dtype: Any) -> str:
        nodes.append(_const_node(f"{scope}/{name}", value, as_dtype))
        return f"{scope}/{name}"

    def op_node(name: str, op_type: str, inputs: list[str], **attrs: Any) -> str:
        node = node_def_pb2.NodeDef(name=f"{scope}/{name}", op=op_type, input=inputs)
        for key, value in attrs.items():
            _set_attr(node, key, value)
        nodes.append(node)
        return node.name

    for name, value in site.constants.items():
        lifted[name] = const(f"const_{len(nodes)}", value, dtype)
    for index, op in enumerate(site.ops[1:]):
        short = f"{index}_{op.name.rsplit('/', 1)[-1]}"  # unique within the site
        if op in site.outputs:
            identity = node_def_pb2.NodeDef(name=op.name, op="Identity", input=[lifted[op.inputs[0].name]])
            _set_attr(identity, "T", dtype)
            nodes.append(identity)
            continue
        if op.type == "Mean":
            source = lifted[op.inputs[0].name]
            per_channel = op_node(f"{short}/per_channel", "Mean",
                                  [source, const(f"{short}/hw", np.array([1, 2], np.int32), None)],
                                  T=dtype, Tidx="int32", keep_dims=True)
            grouped = op_node(f"{short}/grouped", "Reshape",
                              [per_channel, const(f"{short}/grouped_shape",
                                                  np.array([-1, 1, site.groups, site.size], np.int32), None)],
                              T=dtype, Tshape="int32")
            group_mean = op_node(f"{short}/group_mean", "Mean",
                                 [grouped, const(f"{short}/in_group", np.array([3], np.int32), None)],
                                 T=dtype, Tidx="int32", keep_dims=True)
            spread = op_node(f"{short}/spread", "Mul",
                             [group_mean, const(f"{short}/ones", np.ones([1, 1, 1, site.size], np.float32), dtype)],
                             T=dtype)
            lifted[op.outputs[0].name] = op_node(
                f"{short}/per_channel_group_mean", "Reshape",
                [spread, const(f"{short}/channels_shape", np.array([-1, 1, 1, site.channels], np.int32), None)],
                T=dtype, Tshape="int32")
            continue
        node = node_def_pb2.NodeDef(name=f"{scope}/{short}", op=op.type,
                                    input=[lifted[t.name] for t in op.inputs])
        node.attr["T"].CopyFrom(op.node_def.attr["T"])
        nodes.append(node)
        lifted[op.outputs[0].name] = node.name
    return nodes


def _input_name(tensor: Any) -> str:
    return tensor.op.name if tensor.value_index == 0 else f"{tensor.op.name}:{tensor.value_index}"


def _const_node(name: str, value: np.ndarray, as_dtype: Any) -> Any:
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    dtype = tf.as_dtype(as_dtype) if as_dtype is not None else tf.as_dtype(value.dtype)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(dtype.as_numpy_dtype)))
    return node


def _set_attr(node: Any, key: str, value: Any) -> None:
    import tensorflow as tf

    if isinstance(value, bool):
        node.attr[key].b = value
    else:  # a dtype, or its name
        node.attr[key].type = tf.as_dtype(value).as_datatype_enum
