"""The ``tflite`` format: LiteRT flatbuffers at fp32, fp16, dynamic-range and full int8.

Converted from the hub-form SavedModel's ``__call__`` traced at a fixed ``[1, size, size, 3]`` input: mobile
runtimes run one image at a time, and a fully static graph keeps XNNPACK in one partition (docs/stack-facts.md).
The LiteRT adapter splits larger batches. Full int8 uses a representative dataset from the calibration set and
integer kernels for every layer and every normalization's affine part; each normalization's statistics and its
``(x - mean) * scale`` stay float through the converter's selective quantization (QuantizationDebugger's deny
lists; :func:`normalization_arithmetic`). XNNPACK has no int8 kernel for SQUARED_DIFFERENCE and RSQRT and rejects an
int8 ADD of a 1e-5 constant (its scale is out of range), so a fully integer BiT falls apart into over a hundred
XNNPACK partitions and runs slower than fp32 (``benchmarks/records/tflite-int8-partitions.md``); the rest of the
statistics and the normalize step lose what the normalization restores when they are int8 (cosine_min 0.78
against 0.91 on BiT, at the same speed: ``benchmarks/records/bit-tflite-int8-fallback.md``).
``tflite_int8_recipe="full"`` keeps the every-op recipe for comparison. ``int8_io="int8"`` also makes the input and
output tensors int8 (their scale and zero point go into the manifest, and the adapter applies them), for
integer-only accelerators. ``accuracy_target`` keeps float the fewest layers that meet it
(``hubedge.exporter.quantize.accuracy``: the deny list grows). ``int8_io="uint8"`` makes the input uint8
with scale 1/255 and zero point 0, so raw camera pixels go straight in, as MediaPipe Tasks feeds them, and keeps
float32 scores out: an integer output would round a softmax's small probabilities to zero, and nothing on a phone
needs it.

Every file is a mobile file: it carries the standard TFLite Metadata that MediaPipe Tasks and the Task Library read
(``hubedge.exporter.formats.tflite_metadata``), with the labels as its associated files, and a softmax head has its
softmax in the graph (outputs are probabilities; the manifest's model record says ``activation_in_graph``), kept float
in int8 so small probabilities keep their precision; an all-integer file (``int8_io="int8"``,
``tflite_int8_recipe="full"``) keeps integer logits instead (:func:`artifact_info`). hubedge's own contract stays
in the flatbuffer's metadata list as ``hubedge.model``.

Past ``ExportOptions.tflite_buffer_offset_above`` bytes of weights (fp32, fp16, dynamic: BiT R101x3 fp32 and up),
the converter lays the weights out after the flatbuffer, at offsets, and the metadata is added around them
(``hubedge.exporter.formats.tflite_offset``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.formats import FormatResult, tflite_offset
from hubedge.exporter.formats.tflite_metadata import with_standard_metadata
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.contract import metadata_key
from hubedge.runtimes.errors import HubedgeError, UnsupportedError
from hubedge.runtimes.modelinfo import ModelInfo



def artifact_info(info: ModelInfo, all_integer: bool = False) -> ModelInfo:
    """The contract of a .tflite artifact: a softmax head's probabilities come out of the graph, for the mobile
    SDKs. Not in an all-integer graph (``int8_io="int8"`` or ``tflite_int8_recipe="full"``): an int8 softmax rounds
    most probabilities to zero, integer-only accelerators want integer logits, and MediaPipe does not take
    int8 input anyway."""
    return dataclasses.replace(info, activation_in_graph=info.activation == "softmax" and not all_integer)


def _converter(loaded: LoadedModel, size: int, in_graph: bool):
    import tensorflow as tf

    module = loaded.export_module()

    def scores(images):
        outputs = module(images)
        return tf.nn.softmax(outputs, axis=-1) if in_graph else outputs

    # A restored function keeps the shapes it was saved with ([None, None, None, 3]); calling it from a new
    # function with a static signature lets the converter's shape inference make every tensor static.
    fixed = tf.function(scores, input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    concrete = fixed.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], _holder(module, concrete))


def _holder(module: Any, concrete: Any) -> Any:
    """What the converter saves as a SavedModel (and loads back) to give the file its ``serving_default`` signature.

    The hub module carries every function it was restored with, and saving and reloading them was most of a small
    model's conversion time (benchmarks/records/test-timing.md). Where the traced function captures nothing but
    variables, a module holding just those gives the same file, byte for byte (tests/test_export_formats.py).
    Anything else it captures (a table, an asset) keeps the whole module."""
    import tensorflow as tf

    if len(concrete.captured_inputs) != len(concrete.variables):
        return module
    holder = tf.Module()
    holder.captured = list(concrete.variables)
    return holder


def fp32_conversion(loaded: LoadedModel, size: int, in_graph: bool, work: Workspace, beside: Path,
                    offsets: bool = False) -> bytes:
    """The fp32 conversion, made once per run (``work.memo``, the file in ``work.scratch`` or ``beside``): the fp32
    artifact is it, and selective int8 reads the normalizations' tensors from it, so ``--quantize none,int8`` runs
    the converter's float pass once. ``offsets``: in the buffer-offset layout (:func:`uses_buffer_offsets`)."""
    key = ("tflite-float", str(loaded.export_savedmodel), size, in_graph, offsets)
    if key in work.memo and work.memo[key].is_file():
        return work.memo[key].read_bytes()
    converter = _converter(loaded, size, in_graph)
    converter._experimental_use_buffer_offset = offsets  # the converter's only switch for it (TF 2.15+)
    content = converter.convert()
    graph = hashlib.sha256(str(loaded.export_savedmodel).encode()).hexdigest()[:8]  # one file per graph route
    head = "softmax" if in_graph else "logits"
    layout = ".offsets" if offsets else ""
    path = Path(work.scratch or beside) / f"{loaded.info.name}.{size}.{graph}.{head}{layout}.fp32.tflite"
    path.write_bytes(content)
    work.memo[key] = path
    return content


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import tensorflow as tf

    size = loaded.info.input_size
    if options.accuracy_target is not None and options.tflite_int8_recipe == "full":
        raise UnsupportedError("--accuracy-target keeps layers float, which --tflite-int8-recipe full forbids; use the "
                               "default xnnpack recipe")
    all_integer = precision == "int8" and (options.int8_io == "int8" or options.tflite_int8_recipe == "full")
    info = artifact_info(loaded.info, all_integer)
    offsets = uses_buffer_offsets(loaded, precision, options.tflite_buffer_offset_above)
    converter = _converter(loaded, size, info.activation_in_graph) if precision != "fp32" else None
    if converter is not None:
        converter._experimental_use_buffer_offset = offsets
    recipe: dict[str, Any] = {"method": "none (fp32)"}
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        recipe = {"method": "fp16 weights (dequantized to fp32 at load, or run in fp16 by GPU delegates)"}
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        recipe = {"method": "dynamic range: int8 weights (per-channel), activations quantized on the fly"}
    if precision == "int8":
        content, recipe = _int8(converter, loaded, info, options, work, target.parent)
    elif precision == "fp32":
        content = fp32_conversion(loaded, size, info.activation_in_graph, work, target.parent, offsets)
    else:
        content = converter.convert()
    if not has_serving_signature(content):  # TF's converter drops the signature silently where its save fails
        raise HubedgeError(f"the TFLite converter wrote {loaded.info.name} {precision} without its serving_default "
                           "signature, which LiteRT's signature runner calls; report this with the model")
    entries = metadata_entries(loaded, info, precision)
    if offsets:  # flatbuffer_utils and MediaPipe's populator would inline the weights again: laid out here
        recipe["layout"] = BUFFER_OFFSET_LAYOUT
        description = _description(loaded, precision)
        tflite_offset.write_with_metadata(content, entries,
                                          lambda flat: with_standard_metadata(flat, info, description), target)
    else:
        content = with_metadata(content, entries)
        target.write_bytes(with_standard_metadata(content, info, _description(loaded, precision)))
    return FormatResult(input_shape=[1, size, size, 3], recipe=recipe, tools=("tensorflow", "ai-edge-litert",
                        "mediapipe"), io=_io_quantization(target), info=info)


def has_serving_signature(content: bytes) -> bool:
    """Whether the flatbuffer has the ``serving_default`` SignatureDef (read in place: no weights are copied)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    return any(model.SignatureDefs(index).SignatureKey() == b"serving_default"
               for index in range(model.SignatureDefsLength()))


# the manifest's word for a file whose weights follow the flatbuffer
BUFFER_OFFSET_LAYOUT = ("buffer offsets: the weights follow the flatbuffer, each at an offset into the file, as past "
                        "the flatbuffer's 2 GiB limit they must")
# the stored weights per fp32 weight byte, by precision: what the threshold is compared with before converting
STORED_PER_FP32_BYTE = {"fp32": 1.0, "fp16": 0.5, "dynamic": 0.25}


def uses_buffer_offsets(loaded: LoadedModel, precision: str, above: int) -> bool:
    """Whether the file must keep its weights after the flatbuffer: the model's fp32 weights, at what ``precision``
    stores of them, reach ``above`` (decided before converting: the converter stops past 2 GB otherwise). An int8
    file stores a quarter, so no catalog model comes near; its selective recipe reads the fp32 conversion in
    whichever layout that has."""
    share = STORED_PER_FP32_BYTE.get(precision)
    return share is not None and loaded.fp32_weights_bytes * share >= above


def _description(loaded: LoadedModel, precision: str) -> str:
    info = loaded.info
    kind = "image classifier" if info.task == "classification" else "image feature vector"
    return (f"{info.name} {kind} ({precision}), exported by hubedge from {info.handle or info.name}; input RGB "
            f"{info.input_size}x{info.input_size}, centre square crop, bilinear resize")


def _int8(converter, loaded: LoadedModel, info: ModelInfo, options: ExportOptions, work: Workspace,
          beside: Path) -> tuple[bytes, dict[str, Any]]:
    """Integer post-training quantization; by default selective, so XNNPACK keeps the graph in one partition."""
    import tensorflow as tf

    calibration = work.calibration()
    representative = lambda: ([batch] for batch in calibration.batches(1))  # noqa: E731
    int8_io = options.int8_io
    io_type = {"int8": (tf.int8, tf.int8), "uint8": (tf.uint8, tf.float32)}.get(int8_io)
    selective = options.tflite_int8_recipe != "full"
    # the fp32 artifact's own conversion where it is one (its threshold is the default here: int8 does not take it)
    offsets = uses_buffer_offsets(loaded, "fp32", options.tflite_buffer_offset_above)
    fp32 = (fp32_conversion(loaded, info.input_size, info.activation_in_graph, work, beside, offsets) if selective
            else b"")
    epsilons = epsilon_adds(fp32) if selective else []
    statistics = normalization_arithmetic(fp32) if selective else []
    float_nodes = [*epsilons, *statistics]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if io_type is not None:
        converter.inference_input_type, converter.inference_output_type = io_type
    recipe = {
        "method": "full integer post-training quantization (TFLite converter)",
        "weights": "int8 per-channel (symmetric)",
        "activations": "int8 per-tensor (asymmetric), ranges from the representative dataset",
        "io": int8_io or "float32",
        "calibration": calibration.record,
    }
    if not selective:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        content = converter.convert()
        return (pixel_input(content) if int8_io == "uint8" else content), recipe
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    float_ops = [*FLOAT_OPS, *(["SOFTMAX"] if info.activation_in_graph else [])]
    deny = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops, denylisted_nodes=float_nodes)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                         debug_options=deny)

    def finish(quantized: bytes) -> bytes:
        if io_type is not None:  # the debugger's conversion keeps float I/O; the converter's own helper changes it
            from tensorflow.lite.python.util import modify_model_io_type

            quantized = modify_model_io_type(quantized, *io_type)
        return pixel_input(quantized) if int8_io == "uint8" else quantized

    recipe["method"] = ("post-training integer quantization (TFLite converter), selective: each normalization's "
                        "statistics and normalize step kept float, its affine part and every layer int8")
    recipe["float_ops"] = [*float_ops, f"ADD of an epsilon constant ({len(epsilons)} nodes)",
                           f"normalization statistics and (x - mean) * scale ({len(statistics)} nodes)"]
    if options.accuracy_target is None:
        return finish(debugger.get_nondebug_quantized_model()), recipe
    content, recipe["accuracy_aware"] = _accuracy_aware(debugger, float_ops, float_nodes, fp32, finish, loaded,
                                                        info, options, work)
    return content, recipe


def _accuracy_aware(debugger, float_ops: list[str], float_nodes: list[str], float_model: bytes, finish,
                    loaded: LoadedModel, info: ModelInfo, options: ExportOptions,
                    work: Workspace) -> tuple[bytes, dict[str, Any]]:
    """The fewest candidates (:func:`search_candidates`: layers, and normalizations as a whole) kept float, in
    either of :data:`RANKINGS`, that meet the target on the tuning split. Each trial re-quantizes the calibrated
    model with a longer deny list: no new calibration."""
    import tensorflow as tf

    from hubedge.exporter.quantize.accuracy import fewest_float_layers, figures_of, paired_speed, tuning_split
    from hubedge.runtimes.litert import LiteRTPredictor

    split = tuning_split(loaded, options, work)
    candidates = search_candidates(float_model, debugger_errors(debugger), set(float_nodes))
    members, scores = candidates.members, candidates.scores
    rankings = {"debugger": sorted(scores, key=scores.get, reverse=True), "graph order": list(members)}
    with tempfile.TemporaryDirectory(prefix="hubedge-accuracy-", dir=work.scratch) as folder:
        trial_file, plain_file = Path(folder) / "trial.tflite", Path(folder) / "plain.tflite"

        def evaluate(kept_float: list[str]) -> dict[str, float]:
            denied = [tensor for name in kept_float for tensor in members[name]]
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=float_ops, denylisted_nodes=[*float_nodes, *denied])
            trial_file.write_bytes(finish(debugger.get_nondebug_quantized_model()))
            return figures_of(split, LiteRTPredictor(trial_file, info).predict(split.images), info)

        target = options.accuracy_target
        result = fewest_float_layers(rankings, evaluate, target, split, "tflite int8")
        evaluate([])
        trial_file.replace(plain_file)
        evaluate(result.float_layers)  # the debugger ends on the chosen deny list
        record = result.record(target, split, "TFLite converter selective quantization (QuantizationDebugger "
                               "denylisted_nodes)", RANKINGS, len(members), scores)
        norms = len(candidates.normalizations)
        record["candidates"] = (f"{len(members) - norms} layers with weights ({', '.join(LAYER_OPS)}) and {norms} "
                                "normalizations (each one's int8 arithmetic, kept float as a whole)")
        for layer in record["float_layers"]:
            if layer["name"] in candidates.normalizations:
                layer["normalization_ops"] = len(members[layer["name"]])
        batch = split.images[:1]
        record["speed_vs_plain_int8"] = paired_speed(LiteRTPredictor(plain_file, info).direct_call(batch),
                                                     LiteRTPredictor(trial_file, info).direct_call(batch))
        return trial_file.read_bytes(), record


# how each ranking orders the candidates, the first to keep float first; the search keeps the shorter answer
# (benchmarks/records/accuracy-aware-int8.md: neither is always shorter)
RANKINGS = {"debugger": "the QuantizationDebugger's rmse/scale per quantized tensor on the calibration set, "
                        "largest first (a normalization: its worst tensor)",
            "graph order": "the first quantized tensors first: float layers in one run need no quantize/dequantize "
                           "between them, and the error accumulates from the input"}


LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # layers with weights
NORMALIZATION_MARK = "RSQRT"  # a run of ops between two layers that computes 1/σ at run time is a normalization


def debugger_errors(debugger) -> dict[str, float]:
    """Each quantized tensor's output error in its own quantization steps (√mean squared error / scale),
    measured by the debugger's NumericVerify ops on the calibration set: where int8 rounding hurts most."""
    import csv
    import io

    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    errors = {}
    for row in csv.DictReader(dump.getvalue().splitlines()):
        scale, error = float(row["scale"] or 0), float(row["mean_squared_error"] or "nan")
        if scale > 0 and math.isfinite(error):
            errors[row["tensor_name"]] = round(math.sqrt(error) / scale, 4)
    return errors


@dataclasses.dataclass
class Candidates:
    """What an accuracy search may keep float, in graph order: each candidate's name → the output tensors it puts
    on the deny list, and its :func:`debugger_errors` score (a normalization: its worst tensor's)."""

    members: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    normalizations: set[str] = dataclasses.field(default_factory=set)


def search_candidates(float_model: bytes, errors: dict[str, float], already_float: set[str]) -> Candidates:
    """The candidates of a model:

    - each quantized layer with weights (:data:`LAYER_OPS`), alone;
    - each normalization computed at run time (GroupNorm, LayerNorm): the quantized ops of a run between two
      layers that holds an RSQRT, together. BiT loses its int8 accuracy there, not in its convolutions, and one
      of those ops alone kept float barely helps (keeping only the MULs float made the tiny twin worse:
      ``benchmarks/records/accuracy-aware-int8.md``).

    Never the arithmetic before the first layer (the input's scaling to [-1, 1]): with it float, MediaPipe Tasks
    scored EfficientNet-Lite0 3.7e-2 away from LiteRT, and verification refused the file. A model whose
    normalization is folded into its convolutions (EfficientNet-Lite's BN) has layers only."""
    from tensorflow.lite.python import schema_py_generated as schema

    model, codes = read_model(float_model)
    graph = model.subgraphs[0]
    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    kinds = [op_names.get(code) for code in codes]
    found = Candidates()
    run: list[tuple[str, str]] | None = None  # (op kind, output tensor) since the last layer; None before the first

    def close(run: list[tuple[str, str]] | None) -> None:
        if not run or all(kind != NORMALIZATION_MARK for kind, _ in run):
            return
        tensors = [name for _, name in run if name in errors and name not in already_float]
        if tensors:
            name = _unique(_scope(tensors), found.members)
            found.members[name], found.scores[name] = tensors, max(errors[tensor] for tensor in tensors)
            found.normalizations.add(name)

    for op in graph.operators:
        kind, output = kinds[op.opcodeIndex], graph.tensors[op.outputs[0]].name.decode()
        if kind not in LAYER_OPS:
            if run is not None:
                run.append((kind, output))
            continue
        close(run)
        run = []
        if output in errors:
            found.members[output], found.scores[output] = [output], errors[output]
    close(run)
    return found


def _scope(tensors: list[str]) -> str:
    """A normalization's name: the name scope most of its tensors share (fused ops join names with ';')."""
    import collections

    scopes = collections.Counter(part.rsplit("/", 1)[0] for name in tensors for part in name.split(";") if "/" in part)
    return scopes.most_common(1)[0][0] if scopes else tensors[0]


def _unique(name: str, taken: dict[str, Any]) -> str:
    """``name``, or ``name#2``, ``name#3``, … where two normalizations share a scope."""
    count = 2
    candidate = name
    while candidate in taken:
        candidate, count = f"{name}#{count}", count + 1
    return candidate


PIXEL_SCALE, PIXEL_ZERO_POINT = 1.0 / 255.0, 0  # a uint8 input that is the camera's pixel value itself


def pixel_input(content: bytes) -> bytes:
    """A uint8-input model whose input tensor reads raw pixels: scale 1/255, zero point 0.

    The converter takes the input's scale from the calibration images' range, which is [0, 1] only when they
    hold both pure black and pure white. Where it is not, the uint8 tensor gets the pixel scale here; the
    QUANTIZE op after it (uint8 to the graph's int8) then converts to the graph's own scale, so the model
    computes the same function of the pixels and MediaPipe's raw-pixel feed is exact."""
    from tensorflow.lite.tools import flatbuffer_utils

    model, codes = read_model(content)
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    scale, zero_point = float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])
    if np.float32(scale) == np.float32(PIXEL_SCALE) and zero_point == PIXEL_ZERO_POINT:
        return content
    from tensorflow.lite.python import schema_py_generated as schema

    readers = [codes[op.opcodeIndex] for op in graph.operators if graph.inputs[0] in op.inputs]
    if not readers or any(code != schema.BuiltinOperator.QUANTIZE for code in readers):
        raise UnsupportedError("the uint8 input is read by ops other than QUANTIZE; its scale cannot be set to "
                               "raw pixels. Export without --int8-io uint8")
    tensor.quantization.scale = [PIXEL_SCALE]
    tensor.quantization.zeroPoint = [PIXEL_ZERO_POINT]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_model(content: bytes) -> tuple[Any, list[int]]:
    """A .tflite file as TF's schema objects, and the builtin operator number of each of its operator codes
    (newer files keep it in ``builtinCode``, older ones in ``deprecatedBuiltinCode``)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    return model, [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]


FLOAT_OPS = ("SQUARED_DIFFERENCE", "RSQRT")  # no int8 kernels in XNNPACK: each would split the graph
AFFINE_OPS = ("MUL", "ADD", "SUB")  # a normalization's scale and shift, by a per-channel constant


def normalization_arithmetic(float_model: bytes) -> list[str]:
    """Output names of the ops that compute each normalization's statistics and normalized tensor, which the
    default int8 recipe keeps float: from the run's first MEAN up to its last affine op (a MUL, ADD or SUB by a
    per-channel constant after the RSQRT), except the affine ops themselves and what is float already.

    In int8 those ops lose what a normalization exists to restore. Per-tensor int8 of a squared deviation wipes
    out the variance of the quieter groups, and ``(x - mean) * scale`` of a tensor quantized per tensor
    multiplies the quiet channels' rounding error by their large 1/sigma. Kept float, the int8 grid falls on the
    normalized tensor, after its affine shift, where every channel spans a similar range. On the seeded
    BiT-M R50x1 (132 images) cosine_min rose from 0.78 to 0.885 at the same latency; keeping the per-channel
    scale (gamma · rsqrt) float as well made XNNPACK's outputs wrong on a few images while the reference
    kernels were right, so the affine ops stay int8 (``benchmarks/records/bit-tflite-int8-fallback.md``).
    A model whose normalizations are folded into its convolutions (EfficientNet-Lite's BN) has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    model, codes = read_model(float_model)
    graph = model.subgraphs[0]
    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    already = set(epsilon_adds(float_model))

    def per_channel_constant(op, channels: int) -> bool:
        for index in op.inputs:
            tensor = graph.tensors[index]
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if data is not None and len(data) and int(np.prod(tensor.shape)) == channels > 1:
                return True
        return False

    def float_part(run: list[Any]) -> list[str]:
        kinds = [op_names.get(codes[op.opcodeIndex]) for op in run]
        if NORMALIZATION_MARK not in kinds or "MEAN" not in kinds:
            return []
        start, mark = kinds.index("MEAN"), kinds.index(NORMALIZATION_MARK)
        channels = int(graph.tensors[run[0].inputs[0]].shape[-1])
        affine = [i for i in range(mark + 1, len(run))
                  if kinds[i] in AFFINE_OPS and per_channel_constant(run[i], channels)]
        end = affine[-1] if affine else len(run) - 1
        names = [graph.tensors[run[i].outputs[0]].name.decode() for i in range(start, end)
                 if i not in affine and kinds[i] not in FLOAT_OPS]
        return [name for name in names if name not in already]

    found: list[str] = []
    run: list[Any] | None = None  # the ops since the last layer; None before the first
    for op in graph.operators:
        if op_names.get(codes[op.opcodeIndex]) in LAYER_OPS:
            found += float_part(run or [])
            run = []
        elif run is not None:
            run.append(op)
    return found + float_part(run or [])
EPSILON_LIMIT = 1e-3  # a scalar constant this small added to a tensor is a normalization epsilon


def epsilon_adds(float_model: bytes) -> list[str]:
    """Output names of the ADD ops that add a tiny scalar constant (``variance + eps``) in a float model.

    Quantized, such an ADD needs an input-to-output scale ratio outside what XNNPACK's int8 ADD accepts, so
    it would leave XNNPACK and split the graph; kept float it costs nothing.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model, codes = read_model(float_model)
    graph = model.subgraphs[0]
    add = next((i for i, code in enumerate(codes) if code == schema.BuiltinOperator.ADD), None)

    def epsilon(index: int) -> bool:
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is None or tensor.type != schema.TensorType.FLOAT32 or len(data) != 4:
            return False  # not a float32 scalar constant
        return 0 < abs(float(np.frombuffer(bytes(data), np.float32)[0])) <= EPSILON_LIMIT

    return [graph.tensors[op.outputs[0]].name.decode() for op in graph.operators
            if op.opcodeIndex == add and any(epsilon(i) for i in op.inputs)]


def metadata_entries(loaded: LoadedModel, info: ModelInfo, precision: str) -> dict[str, bytes]:
    """hubedge's contract for the file alone: the model, its precision and preprocessing. The labels are not
    repeated here: they travel once, as the standard metadata's associated files."""
    return {
        metadata_key("model"): json.dumps({
            **info.to_dict(), "precision": precision, "weights": loaded.weights.get("source", ""),
            "preprocessing": f"RGB float32 in [0,1], NHWC, centre square crop, resize to {info.input_size}",
        }).encode(),
    }


def with_metadata(content: bytes, entries: dict[str, bytes]) -> bytes:
    """Adds named entries to the flatbuffer's own ``metadata`` list (TF's flatbuffer_utils, schema types)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    tflite_offset.add_entries(model, entries)
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
    ends = (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0]))
    for role, details in ends:
        if details["dtype"].__name__ in ("int8", "uint8"):
            scale, zero_point = details["quantization"]
            io[role] = {"dtype": details["dtype"].__name__, "scale": float(scale), "zero_point": int(zero_point)}
    return io
