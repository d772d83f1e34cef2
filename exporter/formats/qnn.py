"""The ``qnn`` format: an ONNX model fully quantized for Qualcomm NPUs (ONNX Runtime's QNN EP, HTP backend).

The HTP runs a whole graph only if every op is quantized and every shape is static, so this is not the
``onnx`` int8 artifact (which keeps GroupNorm in float for CPUs): the batch is fixed to 1 and
onnxruntime's own QNN recipe (``get_qnn_qdq_config``: uint8 activations, int8 per-channel weights)
quantizes every op. On x86-64 Linux the HTP backend of ``onnxruntime-qnn`` is a simulator: it gives the
NPU's numerics here, not its speed.
"""

from __future__ import annotations

from pathlib import Path

from exporter.formats import FormatResult
from exporter.formats.onnx import CalibrationReader, add_metadata, convert_fp32, int8_settings
from exporter.options import ExportOptions, Workspace
from exporter.sources import LoadedModel
from runtimes.contract import INPUT_NAME, OUTPUT_NAME


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import onnx
    from onnx.tools import update_model_dims
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    size = loaded.info.input_size
    fp32, peak_rss, child_peak = convert_fp32(loaded, work, target.parent)
    model = onnx.load(str(fp32))
    model = update_model_dims.update_inputs_outputs_dims(
        model, {INPUT_NAME: [1, size, size, 3]}, {OUTPUT_NAME: [1, loaded.info.num_outputs]})
    model = onnx.shape_inference.infer_shapes(model)
    del model.metadata_props[:]  # qnn_preprocess_model (onnxruntime 1.32) fails on models that carry metadata
    fixed = target.parent / "model.fixed.onnx"
    onnx.save(model, str(fixed))
    prepared = target.parent / "model.prepared.onnx"
    source = prepared if qnn_preprocess_model(str(fixed), str(prepared)) else fixed  # False: nothing to change
    calibration = work.calibration()
    config = get_qnn_qdq_config(str(source), CalibrationReader(calibration.images), activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=True)
    quantized = target.parent / "model.qnn.onnx"
    quantize(str(source), str(quantized), config)
    model = onnx.load(str(quantized))
    add_metadata(model, loaded, precision)
    onnx.save(model, str(target))
    recipe = {
        "method": "tf2onnx, batch fixed to 1, every op QDQ-quantized with onnxruntime's QNN recipe",
        "weights": "int8 per-channel", "activations": "uint8 per-tensor (MinMax)",
        "target": "Qualcomm HTP via ONNX Runtime's QNN EP", "tf2onnx_peak_rss_mb": round(peak_rss / 2**20),
        "calibration": calibration.record,
    }
    return FormatResult(input_shape=[1, size, size, 3], recipe=recipe,
                        tools=("tf2onnx", "onnx", "onnxruntime", "onnxruntime-qnn"), child_peak_rss_bytes=child_peak,
                        runtime_settings=int8_settings())
