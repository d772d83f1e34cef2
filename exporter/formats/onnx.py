"""The ``onnx`` format: ONNX (tf2onnx) at fp32, fp16 and int8 static QDQ (onnxruntime.quantization).

tf2onnx runs in a child process (``tf2onnx_child``), which returns its memory to the system when it exits; the
manifest records its peak RSS. The child keeps the weights out of TensorFlow's and tf2onnx's graph passes and
folds weight standardization with ONNX Runtime's basic optimizations, at half the peak memory of tf2onnx's own
route (``benchmarks/records/tf2onnx-memory.md``). ``HUBEDGE_TF2ONNX_WEIGHTS_IN_GRAPH=1`` converts the previous way,
for comparison. The graph has a dynamic batch and a fixed
spatial size. fp16 converts weights and arithmetic with onnxruntime's float16 tool, keeping float32 I/O.
int8 is static QDQ calibrated on the calibration set: per-channel int8 weights, uint8 activations, and only the ops
that pay (Conv, MatMul/Gemm for the head) — QDQ around GroupNorm's arithmetic is slower and less accurate than
float there (docs/stack-facts.md, "Quantizing") — plus the activations that follow convs (Clip for ReLU6, Relu), so
that a conv's output is quantized after its activation, over 0..6, and not over the pre-activation range (on
EfficientNet-Lite0 that is most of its int8 agreement: ``benchmarks/records/efficientnet-lite0-onnx-int8-layers.md``).
The int8 artifact is the same for every CPU: on x86 CPUs without VNNI, ONNX Runtime's uint8 × int8 kernels
saturate, and the session option ``session.x64quantprecision=1`` switches them to the exact uint8 × uint8
ones. hubedge's adapter sets it on those CPUs only (on VNNI CPUs it is slower and changes nothing); the
manifest and ``metadata_props`` (``hubedge.ort_session_config``) say so for anyone running the file in their
own session. Measured: docs/portable-int8.md.
Labels and preprocessing go into ``metadata_props``. Past ``ExportOptions.onnx_external_data_above`` bytes of
weights (by default just under protobuf's 2 GiB limit), every file of the route keeps its weights beside it in
ONNX's external-data layout (``hubedge.exporter.formats.onnx_storage``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.formats import FormatResult, onnx_storage
from hubedge.exporter.formats.onnx_mobile import mobile_friendly
from hubedge.exporter.options import ONNX_EXTERNAL_DATA_ABOVE, ExportOptions, Workspace
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.base import fixed_batches, in_fixed_batches
from hubedge.runtimes.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, metadata_key
from hubedge.runtimes.cpu import ALL_CLASSES, ARM64_DOTPROD
from hubedge.runtimes.errors import HubedgeError

OPSET = 18  # tf2onnx 1.17's newest
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm", "Clip", "Relu"]
# what a session must set on x86 without VNNI for exact int8 (the adapter: runtimes.onnx_runtime.cpu_session_config)
INT8_SESSION_CONFIG = {"x86-no-vnni": {"session.x64quantprecision": "1"}}
INT8_SETTINGS_NOTE = ("on x86 CPUs without VNNI, create the ONNX Runtime session with session config entry "
                      "session.x64quantprecision=1 (exact uint8 x uint8 kernels); without it uint8 x int8 sums "
                      "saturate and answers are wrong. hubedge's runtimes set it there.")
PEAK_RSS_LINE = "hubedge tf2onnx child peak RSS bytes: "  # the child's last line (tf2onnx_child.own_peak_rss_bytes)


WEIGHTS_IN_GRAPH_SWITCH = "HUBEDGE_TF2ONNX_WEIGHTS_IN_GRAPH"


def weights_in_graph() -> bool:
    """Whether to convert the previous way, weights inside the graph (for comparison; about twice the memory)."""
    return os.environ.get(WEIGHTS_IN_GRAPH_SWITCH, "0") not in ("", "0")


def conversion_method() -> str:
    if weights_in_graph():
        return f"tf2onnx opset {OPSET} (command line, weights in the graph)"
    return (f"tf2onnx opset {OPSET} (weights kept out of the graph passes; weight standardization folded by "
            "ONNX Runtime's basic optimizations)")


def _run_tf2onnx(savedmodel: Path, output: Path, size: int, external_above: int) -> int:
    """Converts in a child process; returns its peak RSS in bytes."""
    command = [
        sys.executable, "-m", "hubedge.exporter.formats.tf2onnx_child", "--saved-model", str(savedmodel),
        "--size", str(size), "--opset", str(OPSET), "--output", str(output),
        "--external-data-above", str(external_above),
        *(["--weights-in-graph"] if weights_in_graph() else []),
    ]
    # TF_USE_LEGACY_KERAS: TensorFlow then preloads tf_keras instead of Keras 3, which imports scikit-learn where
    # it is installed (nncf needs it): a second off every conversion; the child uses no Keras (same graph, same
    # outputs on the tiny twin)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TF_USE_LEGACY_KERAS": "1"}
    with open(output.with_suffix(".log"), "w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait()
        except BaseException:  # Ctrl-C or an error here must not leave a multi-GB converter running
            process.kill()
            process.wait()
            raise
        log.seek(0)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    if process.returncode < 0:  # a signal: its last log line is whatever it happened to print before
        name = signal.Signals(-process.returncode).name
        why = (" (most likely the kernel's out-of-memory killer: the conversion needed more memory than was free; "
               "see --memory-budget)" if -process.returncode == signal.SIGKILL else "")
        raise HubedgeError(f"the tf2onnx child process was killed by {name}{why}")
    if process.returncode != 0 or not output.is_file():
        detail = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        raise HubedgeError(f"tf2onnx failed (exit {process.returncode}): {detail[:300]}")
    reported = [line[len(PEAK_RSS_LINE):] for line in lines if line.startswith(PEAK_RSS_LINE)]
    if not reported or not reported[-1].isdigit():
        raise HubedgeError("the tf2onnx child did not report its peak memory; its log is "
                           f"{output.with_suffix('.log')}")
    return int(reported[-1])


# why an fp16 ONNX file does not claim arm64 cores with dot product (benchmarks/records/arm64.md)
FP16_ON_ARM = ("ONNX Runtime computes an fp16 graph in fp16 on ARM cores with FP16 arithmetic (ARMv8.2+), where x86 "
               "computes it in fp32: EfficientNet-Lite0's fp16 file fell to top-5 0.986 there, below fp16's floor; "
               "ship the fp32 file to such cores")


@dataclasses.dataclass(frozen=True)
class Fp32Onnx:
    """The fp32 ONNX file an export starts from, and how it was made."""

    path: Path
    method: str  # for the manifest's recipe
    converter_peak: int  # peak RSS of the tf2onnx child that made it (0: written in this process)
    ran_peak: int  # that peak again only if the conversion ran in this call (0 when reused), so each export
    # reports the memory it really used
    rewrites: dict[str, int]  # the mobile rewrites made (onnx_mobile)


def convert_fp32(loaded: LoadedModel, work: Workspace, beside: Path, batch: int | None = None,
                 mobile: bool = False, external_above: int = ONNX_EXTERNAL_DATA_ABOVE,
                 graph_writer: str = "direct") -> Fp32Onnx:
    """The fp32 ONNX of ``loaded`` (dynamic batch named ``batch``, or fixed to ``batch`` images with every shape in
    the file static: :func:`fix_batch`), with ``mobile`` its ops rewritten where mobile accelerators lack them
    (``hubedge.exporter.formats.onnx_mobile``), made once per run and reused: a BiT in hubedge's edge graph written
    from its weights (``bit_onnx``, unless ``graph_writer`` is ``converter``), anything else converted by tf2onnx in
    a child process. Its weights are in a data file beside it from ``external_above`` bytes on
    (``hubedge.exporter.formats.onnx_storage``).
    """
    import onnx

    from hubedge.exporter.formats.bit_graph import edge_layout

    size = loaded.info.input_size
    key = ("fp32-onnx", str(loaded.export_savedmodel), size, batch, mobile, graph_writer)
    if key in work.memo and work.memo[key].path.is_file():
        return dataclasses.replace(work.memo[key], ran_peak=0)
    rewrites: dict[str, int] = {}
    if batch is None and not mobile:
        scratch = Path(work.scratch or beside)
        graph = hashlib.sha256(str(loaded.export_savedmodel).encode()).hexdigest()[:8]  # one file per graph route
        layout = edge_layout(loaded, graph_writer)
        if isinstance(layout, str):
            path = scratch / f"{loaded.info.name}.{size}.{graph}.tf2onnx.onnx"
            peak = ran = _run_tf2onnx(loaded.export_savedmodel, path, size, external_above)
            model = onnx.load(str(path))
            for value in (*model.graph.input, *model.graph.output):
                value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM  # a stable name runtimes can pin
            method = f"{conversion_method()}; not written from the weights: {layout}"
        else:
            from hubedge.exporter.formats.bit_onnx import write_model

            path = scratch / f"{loaded.info.name}.{size}.{graph}.written.onnx"
            method = (f"written from the weights of a BiT {layout.architecture.label} "
                      f"(hubedge.exporter.formats.bit_onnx: tf2onnx's ops for the edge graph), opset {OPSET}")
            # the weights go to a data file beside it as they are written (this file is the run's own; an artifact
            # made from it keeps its weights inline below the threshold): never all in memory at once
            onnx_storage.save_beside(write_model(layout, size, OPSET, onnx_storage.data_file(path)), path)
            made = Fp32Onnx(path, method, 0, 0, rewrites)
            work.memo[key] = made
            return made
    else:  # from the plain file, made once
        plain = convert_fp32(loaded, work, beside, external_above=external_above, graph_writer=graph_writer)
        peak, ran, method = plain.converter_peak, plain.ran_peak, plain.method
        variant = f".batch-{batch or 'dynamic'}.mobile-{mobile}.onnx"
        path = plain.path.with_name(plain.path.stem + variant)
        model = onnx.load(str(plain.path))
        if batch is not None:
            model = fix_batch(model, batch, size, loaded.info.num_outputs)
        if mobile:
            model, rewrites = mobile_friendly(model)
    onnx_storage.save(model, path, external_above)
    made = Fp32Onnx(path, method, peak, ran, rewrites)
    work.memo[key] = made
    return made


def fix_batch(model: Any, batch: int, size: int, num_outputs: int) -> Any:
    """``model`` with its batch fixed to ``batch`` and every intermediate shape inferred anew from it (strictly), so
    that no symbolic dimension is left anywhere in the file: ONNX Runtime Mobile's NNAPI and CoreML providers, and
    the QNN HTP, take static shapes only. Raises HubedgeError, naming them, if some cannot be made static."""
    import onnx
    from onnx.tools import update_model_dims

    model = update_model_dims.update_inputs_outputs_dims(
        model, {INPUT_NAME: [batch, size, size, 3]}, {OUTPUT_NAME: [batch, num_outputs]})
    del model.graph.value_info[:]  # inferred again below, from the static input
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise HubedgeError(f"shapes cannot be inferred for a fixed batch of {batch}: {str(error).strip()[:200]}; "
                           "export with a dynamic batch (without --batch)") from None
    left = symbolic_dims(model)
    if left:
        raise HubedgeError(f"{len(left)} dimension(s) stay symbolic with a fixed batch of {batch} (first: "
                           f"{left[0]}); export with a dynamic batch (without --batch)")
    return model


def symbolic_dims(model: Any) -> list[str]:
    """``tensor[axis]=name`` for each dimension of the graph's inputs, outputs and value infos that is not a number."""
    return [f"{value.name}[{axis}]={dim.dim_param or '?'}"
            for value in (*model.graph.input, *model.graph.output, *model.graph.value_info)
            for axis, dim in enumerate(value.type.tensor_type.shape.dim) if not dim.HasField("dim_value")]


def external_data_record(data: Path) -> dict[str, Any]:
    """The manifest's note of a data file: where the weights are, and why
    (``hubedge.exporter.formats.onnx_storage``)."""
    return {"file": data.name, "offset_alignment": onnx_storage.ALIGNMENT,
            "why": "the weights are stored beside the graph (ONNX external data) past --onnx-external-data-above; "
                   "keep the two files together"}


def int8_settings() -> dict[str, Any]:
    """The runtime settings an int8 ONNX artifact needs to be right on every CPU class, for the manifest."""
    return {"onnxruntime_session_config": INT8_SESSION_CONFIG, "note": INT8_SETTINGS_NOTE}


# ONNX Runtime's calibration cache: the tensor ranges of the first quantization, beside the temporary files of one
# export. Calibration gives the same ranges whatever an accuracy search keeps float or at 16 bits, so its trials
# reuse them instead of running the calibration images through the augmented graph again (a third of a trial's time)
CALIBRATION_CACHE = "model.calibration.json"


def quantize_static_config(source: Path, output: Path, config: Any, ranges: Path) -> Path:
    """``onnxruntime.quantization.quantize`` of a ``StaticQuantConfig`` (as ``get_qnn_qdq_config`` makes), with
    :data:`CALIBRATION_CACHE` ``ranges``, which that wrapper does not pass on."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(source), str(output), config.calibration_data_reader,
                    calibrate_method=config.calibrate_method, quant_format=config.quant_format,
                    activation_type=config.activation_type, weight_type=config.weight_type,
                    op_types_to_quantize=config.op_types_to_quantize, nodes_to_quantize=config.nodes_to_quantize,
                    nodes_to_exclude=config.nodes_to_exclude, per_channel=config.per_channel,
                    reduce_range=config.reduce_range, use_external_data_format=config.use_external_data_format,
                    calibration_providers=config.calibration_providers, extra_options=config.extra_options,
                    calibration_cache_path=str(ranges))
    return output


def full_check(path: Path) -> dict[str, Any]:
    """The ONNX checker's full check of the file (types and shapes inferred strictly): what stricter consumers
    than ONNX Runtime (TensorRT, converters, graph tools) need. ``passed``, and the checker's message if not."""
    import onnx

    record: dict[str, Any] = {"tool": "onnx.checker.check_model(full_check=True)", "onnx": onnx.__version__}
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return {**record, "passed": False, "message": " ".join(lines)[:500]}
    return {**record, "passed": True}


def add_metadata(model, loaded: LoadedModel, precision: str) -> None:
    import onnx

    info = loaded.info
    entries = {
        metadata_key("model"): json.dumps(info.to_dict()),
        metadata_key("precision"): precision,
        metadata_key("preprocessing"): f"RGB float32 in [0,1], NHWC, centre square crop, resize to {info.input_size}",
        metadata_key("weights"): loaded.weights.get("source", ""),
    }
    if info.labels:
        from hubedge.runtimes.labels import load_labels

        entries[metadata_key("labels")] = "\n".join(load_labels(info.labels).lemmas)
    if precision == "int8":
        entries[metadata_key("ort_session_config")] = json.dumps(int8_settings())
    onnx.helper.set_model_props(model, entries)


class CalibrationReader:
    """Feeds the calibration set to onnxruntime's calibrator one image at a time, or ``batch`` at a time to a
    model whose batch is fixed (the last batch filled up with copies: MinMax ranges do not change)."""

    def __init__(self, images: np.ndarray, batch: int = 1) -> None:
        self._batches = iter(fixed_batches(images, batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates (onnxruntime's CalibrationDataReader does)
        return iter(self.get_next, None)


RANKED_OPS = ("Conv", "Gemm", "MatMul")  # the layers an accuracy-aware export may keep float (their weights are int8)


def _accuracy_aware(prepared: Path, quantized: Path, quantize, loaded: LoadedModel, options: ExportOptions,
                    work: Workspace) -> dict[str, Any]:
    """Keeps float the fewest layers, in :func:`graph_order_ranking`, that make the int8 model meet the target
    on the tuning split (``hubedge.exporter.quantize.accuracy``); leaves the chosen model at ``quantized``."""
    from hubedge.exporter.quantize.accuracy import fewest_float_layers, figures_of, paired_speed, tuning_split

    split = tuning_split(loaded, options, work)
    scores = graph_order_ranking(prepared)
    trial = quantized.with_name("model.int8.trial.onnx")

    plain = quantized.with_name("model.int8.plain.onnx")
    onnx_storage.move(quantized, plain)  # already quantized with nothing excluded: trial 0, and the speed baseline

    def evaluate(kept_float: list[str]) -> dict[str, float]:
        model = quantize(kept_float, trial) if kept_float else plain
        return figures_of(split, cpu_outputs(model, split.images), loaded.info)

    target = options.accuracy_target
    result = fewest_float_layers({"graph order": list(scores)}, evaluate, target, split, "onnx int8")
    quantize(result.float_layers, quantized)
    onnx_storage.remove(trial)
    record = result.record(target, split, "onnxruntime.quantization quantize_static nodes_to_exclude",
                           {"graph order": "the first Conv/Gemm layers first: float layers pay only in runs "
                                           "(graph_order_ranking)"}, len(scores), scores)
    batch = split.images[:1]
    record["speed_vs_plain_int8"] = paired_speed(_cpu_call(plain, batch), _cpu_call(quantized, batch))
    onnx_storage.remove(plain)
    return record


def graph_order_ranking(prepared: Path) -> dict[str, float]:
    """Conv/Gemm nodes, first in the graph first (score: the share of the graph that lies after the node).

    Measured on EfficientNet-Lite0 (benchmarks/records/accuracy-aware-int8.md): a float conv between int8 ones
    still reads and writes QDQ'd activations, so float layers pay only in runs, and the error accumulates
    from the input on. Keeping the first half float gives 24.7 dB, while the half with the worst weight error
    (``qdq_loss_debug`` weight matching) or the largest SQNR loss across the layer gives 18–19 dB, no better
    than none. Keyed by node name, as ``nodes_to_exclude`` takes them."""
    import onnx

    layers = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type in RANKED_OPS]
    return {name: round(1.0 - index / len(layers), 4) for index, name in enumerate(layers)}


def _cpu_session(path: Path):
    """A CPU session for a trial model, with the session config this CPU class needs for exact int8 (the
    adapter's)."""
    import onnxruntime as ort

    from hubedge.runtimes.onnx_runtime import cpu_session_config

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in cpu_session_config().items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    """A trial model's outputs on ``images`` on the CPU, 8 at a time (its own batch if that is fixed)."""
    session = _cpu_session(path)
    fixed = session.get_inputs()[0].shape[0]
    return in_fixed_batches(lambda batch: session.run(None, {INPUT_NAME: batch})[0], images,
                            fixed if isinstance(fixed, int) else 8)


def _cpu_call(path: Path, batch: np.ndarray):
    session = _cpu_session(path)
    fixed = session.get_inputs()[0].shape[0]
    feed = {INPUT_NAME: fixed_batches(batch, fixed)[0] if isinstance(fixed, int) else batch}
    return lambda: session.run(None, feed)


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import onnx

    size = loaded.info.input_size
    # the graph ONNX Runtime Mobile's NNAPI and CoreML providers take (onnx_mobile), verified like any other
    above = options.onnx_external_data_above
    made = convert_fp32(loaded, work, target.parent, options.batch, mobile=True, external_above=above,
                        graph_writer=options.graph_writer)
    fp32, child_peak = made.path, made.ran_peak
    big = onnx_storage.stored_bytes(fp32) >= above  # intermediate files keep their weights outside too
    recipe: dict[str, Any] = {"method": made.method,
                              **({"tf2onnx_peak_rss_mb": round(made.converter_peak / 2**20)} if made.converter_peak
                                 else {}),
                              **({"mobile_rewrites": made.rewrites} if made.rewrites else {})}
    if options.batch is not None:
        recipe["method"] += f"; batch fixed to {options.batch}, every shape static"
    if precision == "fp32":
        model = onnx.load(str(fp32))
    elif precision == "fp16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        from hubedge.exporter.formats import onnx_fp16

        model = onnx_fp16.convert(fp32, onnx_storage.data_file(target))  # weights outside: one at a time
        # the tool appends the casts of the float32 input after the nodes that read them: ONNX Runtime loads that
        # graph, but it is not valid ONNX (the checker wants nodes in topological order), so it is sorted
        try:
            OnnxModel(model).topological_sort()
        except RuntimeError as error:
            raise HubedgeError(f"the fp16 ONNX graph of {loaded.info.name} cannot be put in topological order "
                               f"({str(error).strip()[:200]}); export onnx fp32 instead") from None
        recipe["method"] += "; fp16 weights and arithmetic (onnxruntime float16 tool), float32 I/O"
    else:
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                              quantize_static)

        calibration = work.calibration()
        prepared = target.parent / "model.prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True, save_as_external_data=big,
                          all_tensors_to_one_file=True, external_data_location=onnx_storage.data_file(prepared).name)
        quantized = target.parent / "model.int8.onnx"
        ranges = target.parent / CALIBRATION_CACHE

        def quantize(kept_float: list[str], output: Path) -> Path:
            onnx_storage.remove(output)  # onnx appends to a data file that exists
            quantize_static(
                str(prepared), str(output), CalibrationReader(calibration.images, options.batch or 1),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_float,
                calibration_cache_path=str(ranges), use_external_data_format=big,
            )
            return output

        quantize([], quantized)
        recipe.update({
            "method": recipe["method"] + "; static QDQ (onnxruntime.quantization)",
            "weights": "int8 per-channel (symmetric)", "activations": "uint8 per-tensor (MinMax)",
            "ops": QUANTIZED_OPS, "calibration": calibration.record,
        })
        if options.accuracy_target is not None:
            recipe["accuracy_aware"] = _accuracy_aware(prepared, quantized, quantize, loaded, options, work)
        model = onnx.load(str(quantized))
    add_metadata(model, loaded, precision)
    if data := onnx_storage.save(model, target, above):
        recipe["external_data"] = external_data_record(data)
    right_on, not_on = ALL_CLASSES, {}
    if precision == "fp16":  # measured: benchmarks/records/arm64.md
        right_on = tuple(c for c in ALL_CLASSES if c != ARM64_DOTPROD)
        not_on = {ARM64_DOTPROD: FP16_ON_ARM}
    return FormatResult(input_shape=[options.batch, size, size, 3], recipe=recipe, right_on=right_on, not_on=not_on,
                        tools=("tf2onnx", "onnx", "onnxruntime") if made.converter_peak else ("onnx", "onnxruntime"),
                        child_peak_rss_bytes=child_peak,
                        runtime_settings=int8_settings() if precision == "int8" else {})
