"""The ``qnn`` format: an ONNX model fully quantized for Qualcomm NPUs (ONNX Runtime's QNN EP, HTP backend).

The HTP runs a whole graph only if every op is quantized and every shape is static, so this is not the
``onnx`` int8 artifact (which keeps GroupNorm in float for CPUs): the batch is fixed to 1 and
onnxruntime's own QNN recipe (``get_qnn_qdq_config``: uint8 activations, int8 per-channel weights)
quantizes every op. On x86-64 Linux the HTP backend of ``onnxruntime-qnn`` is a simulator: it gives the
NPU's numerics here, not its speed.

An accuracy target (``hubedge.exporter.quantize.accuracy``) cannot keep layers float here: the HTP would hand them to
the CPU. It keeps activation tensors at 16 bits instead (uint16, weights still int8: a16w8), in graph order;
onnxruntime's QNN recipe inserts the conversions between 8- and 16-bit tensors (``init_overrides``), and the
HTP simulator runs such a graph wholly. 16-bit weights would help more on trained weights, but Qualcomm's HTP
op notes require the V73 generation for 16-bit weights with 16-bit activations, and the simulator here refuses
them (the stem Conv falls off the NPU), so they are not offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubedge.exporter.formats import FormatResult, onnx_storage
from hubedge.exporter.formats.onnx import (CALIBRATION_CACHE, CalibrationReader, add_metadata, convert_fp32,
                                           cpu_outputs, external_data_record, fix_batch, int8_settings,
                                           quantize_static_config)
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources import LoadedModel


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    size = loaded.info.input_size
    above = options.onnx_external_data_above
    made = convert_fp32(loaded, work, target.parent, external_above=above, graph_writer=options.graph_writer)
    fp32, child_peak = made.path, made.ran_peak
    big = onnx_storage.stored_bytes(fp32) >= above  # intermediate files keep their weights outside too
    model = fix_batch(onnx.load(str(fp32)), 1, size, loaded.info.num_outputs)
    del model.metadata_props[:]  # qnn_preprocess_model (onnxruntime 1.32) fails on models that carry metadata
    fixed = target.parent / "model.fixed.onnx"
    onnx_storage.save(model, fixed, 0 if big else above)
    prepared = target.parent / "model.prepared.onnx"
    changed = qnn_preprocess_model(str(fixed), str(prepared), save_as_external_data=big, all_tensors_to_one_file=True,
                                   external_data_location=onnx_storage.data_file(prepared).name)
    source = prepared if changed else fixed  # False: nothing to change
    calibration = work.calibration()

    def quantize_with(a16_tensors: list[str], output: Path) -> Path:
        overrides = {tensor: [{"quant_type": QuantType.QUInt16}] for tensor in a16_tensors}
        config = get_qnn_qdq_config(str(source), CalibrationReader(calibration.images),
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                    init_overrides=overrides or None)
        config.use_external_data_format = big
        onnx_storage.remove(output)  # onnx appends to a data file that exists
        return quantize_static_config(source, output, config, target.parent / CALIBRATION_CACHE)

    quantized = quantize_with([], target.parent / "model.qnn.onnx")
    search = (_accuracy_aware(source, quantized, quantize_with, loaded, options, work)
              if options.accuracy_target is not None else None)
    model = onnx.load(str(quantized))
    add_metadata(model, loaded, precision)
    data = onnx_storage.save(model, target, above)
    recipe = {
        "method": f"{made.method}; batch fixed to 1, every op QDQ-quantized with onnxruntime's QNN recipe",
        "weights": "int8 per-channel", "activations": "uint8 per-tensor (MinMax)" + (
            f"; {len(search['a16_tensors'])} tensors uint16 for the accuracy target" if search and search["a16_tensors"]
            else ""),
        "target": "Qualcomm HTP via ONNX Runtime's QNN EP",
        **({"tf2onnx_peak_rss_mb": round(made.converter_peak / 2**20)} if made.converter_peak else {}),
        "calibration": calibration.record,
        **({"accuracy_aware": search} if search is not None else {}),
        **({"external_data": external_data_record(data)} if data else {}),
    }
    return FormatResult(input_shape=[1, size, size, 3], recipe=recipe,
                        tools=(*(("tf2onnx",) if made.converter_peak else ()), "onnx", "onnxruntime",
                               "onnxruntime-qnn"),
                        child_peak_rss_bytes=child_peak,
                        runtime_settings=int8_settings())


CARRIED_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Shape")  # pass their input's quantization


def graph_order_tensors(model_path: Path) -> list[str]:
    """The activation tensors the recipe quantizes, first in the graph first: each node's outputs, except those
    of ops that only move data (they carry their input's scale). Error accumulates from the input on, so the
    first tensors are kept at 16 bits first (measured: benchmarks/records/accuracy-aware-int8.md)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [output for node in graph.node if node.op_type not in CARRIED_OPS for output in node.output if output]


def _accuracy_aware(source: Path, quantized: Path, quantize_with, loaded: LoadedModel, options: ExportOptions,
                    work: Workspace) -> dict[str, Any]:
    """Keeps at 16 bits the fewest activation tensors, in graph order, that make the qnn model meet the target on
    the tuning split; leaves the chosen model at ``quantized``. Trials run on ONNX Runtime's CPU EP, which
    computes the same quantized arithmetic; the export's verification then runs the artifact on the HTP."""
    from hubedge.exporter.quantize.accuracy import A16, fewest_float_layers, figures_of, tuning_split

    split = tuning_split(loaded, options, work)
    tensors = graph_order_tensors(source)
    trial = quantized.with_name("model.qnn.trial.onnx")

    def evaluate(a16_tensors: list[str]) -> dict[str, float]:
        model = quantize_with(a16_tensors, trial) if a16_tensors else quantized
        return figures_of(split, cpu_outputs(model, split.images), loaded.info)

    target = options.accuracy_target
    result = fewest_float_layers({"graph order": tensors}, evaluate, target, split, "qnn int8", keeping=A16)
    if result.float_layers:
        quantize_with(result.float_layers, quantized)
    onnx_storage.remove(trial)
    record = result.record(target, split, "onnxruntime QNN recipe, 16-bit activations by tensor (init_overrides)",
                           {"graph order": "the first activation tensors first: the error accumulates from the "
                                           "input (graph_order_tensors)"}, len(tensors))
    record["speed_vs_plain_int8"] = {"not_measured": "the HTP here is a simulator (the NPU's numerics, not its "
                                                     "speed): time both artifacts on the device"}
    return record
