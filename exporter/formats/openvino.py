"""The ``openvino`` format: OpenVINO IR (``.xml`` + ``.bin``) at fp32, fp16 and int8 (NNCF).

A BiT in hubedge's edge graph is built from its weights (``bit_openvino``: the ops ``ov.convert_model`` makes of
it, at a fraction of the memory); anything else is converted with ``ov.convert_model`` straight from the hub-form
SavedModel (NNCF on an IR converted from the SavedModel is more accurate than on one converted from ONNX,
docs/stack-facts.md). Either has a dynamic batch and a fixed spatial size. fp32 is saved with
``compress_to_fp16=False`` (``ov.save_model`` compresses to fp16 by default); fp16 compresses the weights. bf16 is the fp32 IR marked to run with bf16 inference precision (the
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

import numpy as np

from hubedge.exporter.formats import FormatResult
from hubedge.exporter.options import INT8_CPU_PORTABLE, ExportOptions, Workspace
from hubedge.runtimes.contract import rt_info_path
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.cpu import ALL_CLASSES, ARM64_CLASSES, ARM64_NO_DOTPROD, X86_VNNI


# NNCF would otherwise put FakeQuantize on GroupNorm's per-channel statistics (ReduceMean → Reshape), whose
# per-tensor int8 ranges wreck small-variance channels: cosine 0.77 vs 0.99 on the tiny twin. SquaredDifference is
# the variance where the converter does not fuse GroupNorm into MVN (the as-is route's 4-D rewrite), and quantized
# it wrecks them the same way (benchmarks/records/published-graph.md, run 3).
FLOAT_OPS = ("Multiply", "Add", "Subtract", "Power", "SquaredDifference", "ReduceMean", "Reshape", "Pad", "MaxPool",
             "Sqrt", "Divide")


def _add_rt_info(model, loaded: LoadedModel, precision: str) -> None:
    info = loaded.info
    model.set_rt_info(json.dumps(info.to_dict()), rt_info_path("model"))
    model.set_rt_info(precision, rt_info_path("precision"))
    model.set_rt_info(f"RGB float32 in [0,1], NHWC, centre square crop, resize to {info.input_size}",
                      rt_info_path("preprocessing"))
    model.set_rt_info(loaded.weights.get("source", ""), rt_info_path("weights"))
    if info.labels:
        from hubedge.runtimes.labels import load_labels

        model.set_rt_info("\n".join(load_labels(info.labels).lemmas), rt_info_path("labels"))


LAYER_TYPES = ("Convolution", "GroupConvolution", "MatMul")  # the layers NNCF quantizes here, and may return to float
EXACT = {"top1_margin": 1.0, "top1": 1.0, "top5": 1.0, "cosine_min": 1.0, "sqnr_db": float("inf")}  # FP32 itself


def _accuracy_aware(model, dataset, settings: dict[str, Any], plain_advanced, loaded: LoadedModel,
                    options: ExportOptions, work: Workspace):
    """NNCF's ``quantize_with_accuracy_control``: it quantizes, ranks the quantized layers by how much each costs
    on the tuning split, and returns them to float one at a time until the target's score is met (a drop from
    an exact model's score to exactly 1: ``AccuracyTarget.score``). NNCF validates in f32 inference precision,
    as the export's own final check does (CPUs with bf16 would otherwise default to it).

    Activations are quantized per tensor here. NNCF's default quantizes a depthwise convolution's input per
    channel, and those ranges, set from a few dozen calibration images, clip channels that other photos drive
    harder. The tuning split is made of the calibration photos and cannot see that loss, so per channel a target
    met on it missed on new photos; per tensor, the two agree (records/accuracy-aware-int8.md). Plain int8
    keeps the default, which meets its own target."""
    import dataclasses

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters, QuantizationParameters

    from hubedge.exporter.quantize.accuracy import (TargetUnreachable, figures_of, float_layer_limit, nncf_validation,
                                                    paired_speed, tuning_split)

    target = options.accuracy_target
    split = tuning_split(loaded, options, work)
    validate = nncf_validation(split, loaded.info, target)
    every_image = range(len(split.images))
    layers = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in LAYER_TYPES]
    limit = float_layer_limit(len(layers))
    advanced = dataclasses.replace(plain_advanced,
                                   activations_quantization_params=QuantizationParameters(per_channel=False))
    quantized = nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(list(every_image), lambda index: split.images[index : index + 1]), validate,
        max_drop=target.score(EXACT) - 1.0, drop_type=nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=advanced,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=limit),
        **settings)
    compiled = ov.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # not the bf16 default
    outputs = np.concatenate([compiled(split.images[i : i + 1])[compiled.output(0)] for i in every_image])
    figures = figures_of(split, outputs, loaded.info)
    kept_float = float_layers(quantized)
    if len(kept_float) > limit:  # one NNCF iteration can return a quantizer shared by several layers
        raise TargetUnreachable(
            f"NNCF's accuracy control met {target.spec} on the tuning split only by keeping {len(kept_float)} of "
            f"{len(layers)} layers float, more than the {limit} an int8 artifact may keep "
            f"({target.describe(figures)}); lower the target, or export fp16 instead")
    if not target.met(figures):
        raise TargetUnreachable(
            f"NNCF's accuracy control kept {len(kept_float)} of {len(layers)} layers float (at most {limit}) and the "
            f"int8 model still misses {target.spec} on the tuning split ({len(split.images)} images): it reached "
            f"{target.describe(figures)}; lower the target, or export fp16 instead")
    plain = nncf.quantize(model, dataset, advanced_parameters=plain_advanced, **settings)  # only to time against
    record = {"route": "NNCF quantize_with_accuracy_control", "target": target.spec, "met_on": split.description,
              "tuning_figures": figures, "ranking": "NNCF's own (each quantized layer's cost on the tuning split)",
              "quantized_layers": len(layers), "float_layer_limit": limit,
              "float_layers": [{"name": name} for name in kept_float],
              "why_float": f"returned to float by NNCF until the int8 model met {target.spec} on the tuning split",
              "speed_vs_plain_int8": paired_speed(_latency_call(plain, split.images[:1]),
                                                  _latency_call(quantized, split.images[:1]))}
    return quantized, record


def _latency_call(model, batch: np.ndarray):
    """One batch-1 inference as the adapter compiles it on the CPU (latency hint, f32 inference precision)."""
    import openvino as ov

    static = model.clone()
    static.reshape({static.input(0): list(batch.shape)})
    compiled = ov.compile_model(static, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda: request.infer({0: batch})[output]


def float_layers(model) -> list[str]:
    """The convolutions and matrix products whose weights are not int8: no FakeQuantize and no 8-bit constant on
    the path that feeds their weights (NNCF's quantized weights are a FakeQuantize, or once compressed an int8
    constant converted and scaled)."""
    def int8_weights(node) -> bool:
        for _ in range(6):  # Convert → Subtract → Multiply → Reshape at most, then the constant itself
            kind = node.get_type_name()
            if kind == "FakeQuantize" or (kind == "Constant"
                                          and node.get_element_type().get_type_name() in ("i8", "u8")):
                return True
            if kind not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose") or node.get_input_size() == 0:
                return False
            node = node.input_value(0).get_node()
        return False

    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in LAYER_TYPES and not int8_weights(op.input_value(1).get_node())]


# why an OpenVINO int8 artifact claims ARMv8.0 cores only once verified there (docs/arm64.md)
ARM64_V80_INT8 = ("OpenVINO's ARM CPU plugin cannot run some int8 convolutions on cores without dot product "
                  "(EfficientNet-Lite0's: 'object is not initialized'; BiT's run)")


def fp32_model(loaded: LoadedModel, size: int, batch: int, graph_writer: str = "direct") -> tuple[Any, str]:
    """The fp32 ``ov.Model`` (``batch``: 1, or -1 for a dynamic batch) and how it was made: a BiT in hubedge's edge
    graph built from its weights (``bit_openvino``, unless ``graph_writer`` is ``converter``), anything else by
    ``ov.convert_model`` from the SavedModel."""
    import openvino as ov

    from hubedge.exporter.formats.bit_graph import edge_layout

    layout = edge_layout(loaded, graph_writer)
    if isinstance(layout, str):
        model = ov.convert_model(str(loaded.export_savedmodel), input=[batch, size, size, 3])
        return model, f"ov.convert_model from the SavedModel (not written from the weights: {layout})"
    from hubedge.exporter.formats.bit_openvino import build_model

    model = build_model(layout, size)
    if batch == 1:
        model.reshape({model.input(0): [1, size, size, 3]})
    return model, (f"written from the weights of a BiT {layout.architecture.label} "
                   "(hubedge.exporter.formats.bit_openvino: ov.convert_model's ops for the edge graph)")


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    import openvino as ov

    size = loaded.info.input_size
    # made for one image (--batch 1: static shapes from the start) or a dynamic batch (-1), which calibration and
    # the accuracy search feed image by image; a larger fixed batch is set on the finished model
    model, made = fp32_model(loaded, size, 1 if options.batch == 1 else -1, options.graph_writer)
    recipe: dict[str, Any] = {"method": f"{made}; fp32 weights (no fp16 compression)"}
    right_on, unproven = ALL_CLASSES, {}
    compress = False
    if precision == "fp16":
        compress = True
        recipe = {"method": f"{made}; weights compressed to fp16"}
    elif precision == "bf16":
        right_on = (X86_VNNI,)  # bf16 arithmetic (AVX512_BF16, AMX) comes only on x86 CPUs that also have VNNI
        recipe = {"method": f"{made}; fp32 weights, run with bf16 inference precision "
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
        settings = {"subset_size": len(calibration.images), "preset": nncf.QuantizationPreset.PERFORMANCE,
                    "ignored_scope": kept_float}
        advanced = AdvancedQuantizationParameters(overflow_fix=overflow_fix)
        if options.accuracy_target is None:
            model = nncf.quantize(model, dataset, advanced_parameters=advanced, **settings)
        else:
            model, accuracy_aware = _accuracy_aware(model, dataset, settings, advanced, loaded, options, work)
        right_on = ALL_CLASSES if portable else (X86_VNNI, *ARM64_CLASSES)
        unproven = {ARM64_NO_DOTPROD: ARM64_V80_INT8}
        recipe = {
            "method": f"NNCF post-training quantization (nncf.quantize) of the fp32 model: {made}",
            "preset": "performance (symmetric int8, weights per channel)",
            "activations": "int8 per-tensor" + ("" if options.accuracy_target is not None else
                                                ", per-channel into depthwise convolutions (NNCF's CPU default)"),
            "int8_cpu": "portable" if portable else "vnni",
            "weights": ("7-bit range in int8 (NNCF OverflowFix.ENABLE): no 16-bit saturation on x86 without VNNI"
                        if portable else "full 8-bit range (OverflowFix.DISABLE): saturates on x86 without VNNI"),
            "quantized_ops": ["Convolution", "MatMul"],
            "kept_float": "GroupNorm arithmetic and its statistics (" + ", ".join(FLOAT_OPS) + ")",
            "calibration": calibration.record,
            **({"accuracy_aware": accuracy_aware} if options.accuracy_target is not None else {}),
        }
    if options.batch is not None and options.batch > 1:
        model.reshape({model.input(0): [options.batch, size, size, 3]})
    _add_rt_info(model, loaded, precision)
    ov.save_model(model, str(target), compress_to_fp16=compress)
    if options.batch is not None:
        recipe["batch"] = f"fixed to {options.batch}"
    return FormatResult(input_shape=[options.batch, size, size, 3], recipe=recipe, tools=("openvino", "nncf"),
                        right_on=right_on, unproven=unproven)
