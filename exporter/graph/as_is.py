"""The as-is route's graph: the module's own, with hubedge's general rewrites where they prove equal.

A model hubedge does not re-author keeps its own graph, but the arithmetic every converter handles badly is
re-expressed first (``hubedge.exporter.graph.graph_rewrite``: 5-D GroupNorm in 4-D). The module is frozen, rewritten,
and saved as a hub-form SavedModel whose weights are variables again, so every converter reads it exactly as it
reads the original. The rewritten SavedModel is cached by the module's variables and the rewrite's version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubedge.exporter.fsutil import atomic_path, sha256_of
from hubedge.exporter.graph.graph_rewrite import REWRITE_VERSION, rewrite_group_norms
from hubedge.exporter.sources.savedmodel import read_module_info, write_module_info
from hubedge.runtimes.cache import cache_dir

MAX_LEFT_REASONS = 3  # of the sites left as they were, this many reasons go into the record


def rewritten_savedmodel(loaded: Any) -> tuple[Path | None, dict[str, Any]]:
    """The SavedModel of ``loaded``'s graph with its 5-D GroupNorms in 4-D, and a record of the rewrite; the
    directory is None when nothing in the graph needed rewriting."""
    source = loaded.savedmodel_dir
    variables = source / "variables"
    digest = sha256_of(variables if variables.is_dir() else source)[:16]
    directory = cache_dir() / "rewritten" / f"v{REWRITE_VERSION}" / f"{loaded.info.name}-{digest}"
    if (directory / "saved_model.pb").is_file():
        record = (read_module_info(directory) or {}).get("weights", {}).get("rewrite")
        if record:
            return directory, dict(record)
    graph_def, input_name, output_name = _frozen(loaded.module(), loaded.info.input_size)
    result = rewrite_group_norms(graph_def, input_name, output_name)
    record: dict[str, Any] = {"group_norms_in_4d": result.rewritten, "group_norms_left": len(result.left)}
    if result.left:
        record["left_because"] = result.left[:MAX_LEFT_REASONS]
    if not result.rewritten:
        return None, record
    weights = {key: value for key, value in loaded.weights_record().items() if key not in ("sha256", "savedmodel")}
    weights.update(graph="rewritten", rewritten_from=str(source), rewritten_from_sha256=digest, rewrite=record)
    _save_graph(result.graph_def, input_name, output_name, loaded.info, directory, weights)
    return directory, record


def _frozen(module: Any, size: int) -> tuple[Any, str, str]:
    """``module(images)`` frozen into a GraphDef at any image size (at ``size`` if the module insists on one)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    for shape in ([None, None, None, 3], [None, size, size, 3]):
        traced = tf.function(lambda images: module(images),
                             input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
        try:
            function = traced.get_concrete_function()
        except (ValueError, TypeError):
            continue
        frozen = convert_variables_to_constants_v2(function)
        return frozen.graph.as_graph_def(), frozen.inputs[0].name, frozen.outputs[0].name
    raise ValueError("the module cannot be called on float32 [batch, height, width, 3] images")


def _save_graph(graph_def: Any, input_name: str, output_name: str, info: Any, directory: Path,
                weights: dict[str, Any]) -> None:
    """Saves a frozen graph as a hub-form SavedModel, its large constants turned back into variables."""
    import tensorflow as tf

    from hubedge.exporter.formats.tf2onnx_child import take_out_weights

    values = take_out_weights(graph_def)  # large constants → placeholders, fed from the variables below
    names = sorted(values)
    module = tf.__internal__.tracking.AutoTrackable()
    module.variables = [tf.Variable(values[name], trainable=False, name=f"weight_{i}") for i, name in enumerate(names)]
    shape = graph_def_input_shape(graph_def, input_name)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    def call(images: tf.Tensor) -> tf.Tensor:
        feeds = {name: variable.read_value() for name, variable in zip(names, module.variables)}
        (output,) = tf.graph_util.import_graph_def(graph_def, input_map={input_name: images, **feeds},
                                                   return_elements=[output_name], name="rewritten")
        return output

    module.__call__ = call
    module.trainable_variables = []
    module.regularization_losses = []
    with atomic_path(directory, directory=True) as temp:
        tf.saved_model.save(module, str(temp), signatures={"serving_default": call})
        write_module_info(temp, info, weights)


def graph_def_input_shape(graph_def: Any, input_name: str) -> list[int | None]:
    """The shape of the placeholder ``input_name`` (``[None, None, None, 3]`` or a fixed size)."""
    node = next(node for node in graph_def.node if node.name == input_name.split(":")[0])
    return [None if dim.size < 0 else dim.size for dim in node.attr["shape"].shape.dim]
