"""The ``openvino`` format: OpenVINO IR (``.xml`` + ``.bin``) at fp32, fp16 and int8 (NNCF).

Converted with ``ov.convert_model`` straight from the hub-form SavedModel (NNCF on an IR converted from the
SavedModel is more accurate than on one converted from ONNX, docs/stack-facts.md), with a dynamic batch and a fixed
spatial size. fp32 is saved with ``compress_to_fp16=False`` (``ov.save_model`` compresses to fp16 by
default); fp16 compresses the weights. bf16 is the fp32 IR marked to run with bf16 inference precision (the
adapter sets ``INFERENCE_PRECISION_HINT=bf16``), a precision of its own that CPUs with AVX512_BF16 or AMX run
about 2× faster than f32; it is never passed off as fp32. int8 is NNCF post-training quantization on the
calibration set.
int8 weights are 7-bit by default (NNCF's ``OverflowFix.ENABLE``): on x86 CPUs without VNNI, OpenVINO's int8
convolutions sum pairs of uint8 × int8 products in 16 bits (``VPMADDUBSW``), which saturates with full-range
weights (EfficientNet-Lite0: cosine_min 0.84 there, 0.96 with VNNI) and never with 7-bit ones. The artifact is
then right on every CPU class, at no speed cost. ``int8_cpu="vnni"`` keeps the full 8 bits (a little closer to
FP32 on VNNI CPUs), and the manifest says that recipe is right only on VNNI CPUs (docs/portable-int8.md).
Labels and preprocessing go into the IR's ``rt_info``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from exporter.formats import FormatResult
from exporter.options import INT8_CPU_PORTABLE, ExportOptions, Workspace
from runtimes.contract import rt_info_path
from exporter.sources import LoadedModel
from runtimes.cpu import ALL_CLASSES, ARM64, X86_VNNI


# NNCF would otherwise put FakeQuantize on GroupNorm's per-channel statistics (ReduceMean → Reshape), whose
# per-tensor int8 ranges wreck small-variance channels: cosine 0.77 vs 0.99 on the tiny twin.
FLOAT_OPS = ("Multiply", "Add", "Subtract", "Power", "ReduceMean", "Reshape", "Pad", "MaxPool", "Sqrt", "Divide")


def _add_rt_info(model, loaded: LoadedModel, precision: str) -> None:
    info = loaded.info
    model.set_rt_info(json.dumps(info.to_dict()), rt_info_path("model"))
    model.set_rt_info(precision, rt_info_path("precision"))
    model.set_rt_info(f"RGB float32 in [0,1], NHWC, centre square crop, resize to {info.input_size}",
                      rt_info_path("preprocessing"))
    model.set_rt_info(loaded.weights.get("source", ""), rt_info_path("weights"))
    if info.labels:
        from runtimes.labels import load_labels

        model.set_rt_info("\n".join(load_labels(info.labels).lemmas), rt_info_path("labels"))


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import openvino as ov

    size = loaded.info.input_size
    model = ov.convert_model(str(loaded.export_savedmodel), input=[-1, size, size, 3])
    recipe: dict[str, Any] = {"method": "ov.convert_model from the SavedModel; fp32 weights (no fp16 compression)"}
    right_on = ALL_CLASSES
    compress = False
    if precision == "fp16":
        compress = True
        recipe = {"method": "ov.convert_model from the SavedModel; weights compressed to fp16"}
    elif precision == "bf16":
        right_on = (X86_VNNI,)  # bf16 arithmetic (AVX512_BF16, AMX) comes only on x86 CPUs that also have VNNI
        recipe = {"method": "ov.convert_model from the SavedModel; fp32 weights, run with bf16 inference precision "
                            "(INFERENCE_PRECISION_HINT=bf16, read from rt_info hubedge/precision by the adapter)"}
    elif precision == "int8":
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        nncf.set_log_level(logging.WARNING)  # its INFO lists every op left in float: hundreds of lines
        calibration = work.calibration()
        dataset = nncf.Dataset(list(calibration.images), lambda image: image[None])
        kept_float = nncf.IgnoredScope(types=list(FLOAT_OPS), validate=False)
        portable = options.int8_cpu == INT8_CPU_PORTABLE
        overflow_fix = OverflowFix.ENABLE if portable else OverflowFix.DISABLE
        model = nncf.quantize(model, dataset, subset_size=len(calibration.images),
                              preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=kept_float,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix))
        right_on = ALL_CLASSES if portable else (X86_VNNI, ARM64)
        recipe = {
            "method": "NNCF post-training quantization (nncf.quantize) of the IR converted from the SavedModel",
            "preset": "performance (symmetric int8: per-channel weights, per-tensor activations)",
            "int8_cpu": "portable" if portable else "vnni",
            "weights": ("7-bit range in int8 (NNCF OverflowFix.ENABLE): no 16-bit saturation on x86 without VNNI"
                        if portable else "full 8-bit range (OverflowFix.DISABLE): saturates on x86 without VNNI"),
            "quantized_ops": ["Convolution", "MatMul"],
            "kept_float": "GroupNorm arithmetic and its statistics (" + ", ".join(FLOAT_OPS) + ")",
            "calibration": calibration.record,
        }
    _add_rt_info(model, loaded, precision)
    ov.save_model(model, str(target), compress_to_fp16=compress)
    return FormatResult(input_shape=[None, size, size, 3], recipe=recipe, tools=("openvino", "nncf"), right_on=right_on)
