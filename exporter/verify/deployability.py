"""What the target runtimes' own tools say an artifact can be accelerated by: the deployability report.

Why: an artifact that runs on this machine's CPU may still run entirely on the CPU of a phone, because the
accelerator the user wants refuses a shape or an op. Only each vendor's tool knows its accelerator's rules, so
hubedge runs those tools here and records what they say, never its own guess:

- ONNX (``onnx``, ``qnn``): ONNX Runtime's mobile usability checker (the functions behind
  ``python -m onnxruntime.tools.check_onnx_model_mobile_usability``) for NNAPI, CoreML NeuralNetwork and CoreML
  MLProgram: nodes, the nodes each provider takes, partitions, the ops it lacks, and the tool's own verdict
  (``YES``: one partition over 75 % of the nodes), as the file is and, if its shapes are dynamic, as it would be
  with them fixed (``--batch 1``).
- TFLite: TensorFlow's model analyzer for the GPU delegate, and ``litert-benchmark`` (ai-edge-litert's) for
  whether its CPU accelerator, XNNPACK, takes the whole graph.
- OpenVINO: which ops the CPU plugin reports it runs (``Core.query_model``); other devices are "not here" when
  this machine has none.

A tool that is not installed gives ``{"checked": False, "reason": ...}``, never a figure.
``--require-offload nnapi|coreml|gpu`` fails an export whose report falls short of the tool's ``YES``.

The report also says when a file made for phones (tflite, onnx, ort, qnn) is too large to ship in a phone app
(``phone_size``): the file is still written, since the format holds it and a desktop or server can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hubedge.runtimes.errors import HubedgeError

__all__ = ["OFFLOAD_TARGETS", "PHONE_APP_BYTES", "OffloadRefused", "offload_shortfall", "report", "summary_line"]

# --require-offload: the accelerator, the formats whose report speaks of it, and what meets it
OFFLOAD_TARGETS = {"nnapi": ("onnx", "qnn"), "coreml": ("onnx", "qnn"), "gpu": ("tflite",)}
ORT_PROVIDERS = {"nnapi": "NNAPI", "coreml_neuralnetwork": "CoreML NeuralNetwork",
                 "coreml_mlprogram": "CoreML MLProgram"}
# why an .ort file has no NNAPI/CoreML figures: the checker reads ONNX, and a Fixed-style file's graph is no longer
# the one those providers would be offered (ORT's CPU fusions are applied)
ORT_FORMAT_UNCHECKED = ("ONNX Runtime's mobile usability checker reads ONNX files only, and this file holds the graph "
                        "after ORT's CPU optimizations (Fixed style); the onnx export with the same options has the "
                        "NNAPI and CoreML report")


# the formats a phone app ships, and the stored size (file and data file) past which one is too large for that: every
# inference reads all the weights, from memory a phone shares with the system and every other app, and Google Play
# ships an app's content past its 200 MB download only in asset packs (the one delivered with the install was capped
# at 1 GB when they came)
PHONE_FORMATS = ("tflite", "onnx", "ort", "qnn")
PHONE_APP_BYTES = 1_000_000_000


class OffloadRefused(HubedgeError):
    """An artifact that the accelerator ``--require-offload`` names would not take, by its vendor's tool."""


def report(artifact: Path, fmt_name: str, runtime: str, size_bytes: int | None = None) -> dict[str, Any]:
    """The deployability report of one artifact (``fmt_name`` and ``runtime`` as the formats table names them);
    ``size_bytes``, what it stores (its data file included), judges a phone format's size."""
    phone = {} if size_bytes is None or fmt_name not in PHONE_FORMATS else {"phone_size": _phone_size(size_bytes)}
    if fmt_name == "ort":
        return {"ort_mobile": {"checked": False, "reason": ORT_FORMAT_UNCHECKED}, **phone}
    if runtime == "onnxruntime":
        return {"ort_mobile": _ort_mobile(artifact), **phone}
    if fmt_name == "tflite":
        return {"gpu_delegate": _tflite_gpu(artifact), "xnnpack": _xnnpack(artifact), **phone}
    if runtime == "openvino":
        return {"openvino": _openvino(artifact)}
    return {}


def _phone_size(size_bytes: int) -> dict[str, Any]:
    fits = size_bytes <= PHONE_APP_BYTES
    record: dict[str, Any] = {"bytes": size_bytes, "limit_bytes": PHONE_APP_BYTES, "fits": fits}
    if not fits:
        record["note"] = (f"{size_bytes / 1e9:.2f} GB, too large to ship in a phone app (over "
                          f"{PHONE_APP_BYTES / 1e9:g} GB): written because the format holds it, for desktops and "
                          "servers; for a phone, take a lower precision or a smaller model")
    return record


def _ort_mobile(path: Path) -> dict[str, Any]:
    try:
        import onnxruntime
        from onnxruntime.tools.mobile_helpers import usability_checker as checker
    except ImportError as error:
        return {"checked": False, "reason": f"ONNX Runtime's mobile usability checker is not installed ({error})"}
    record: dict[str, Any] = {"tool": "onnxruntime.tools.mobile_helpers.usability_checker",
                              "onnxruntime": onnxruntime.__version__}
    with tempfile.TemporaryDirectory(prefix="hubedge-usability-") as tmp:
        # as the tool does: at ONNX Runtime's basic optimization level, which a mobile build applies too
        optimized = Path(tmp) / "model.onnx"
        checker.optimize_model(path, optimized, use_external_initializers=True)
        model = checker.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        dynamic_inputs, dynamic_values = checker.check_shapes(model.graph)
        record["static_shapes"] = not dynamic_inputs and not dynamic_values
        record["dynamic_inputs"] = [value.name for value in dynamic_inputs]
        record["dynamic_values"] = dynamic_values
        calls = {
            "nnapi": checker.check_nnapi_partitions,
            "coreml_neuralnetwork": lambda m, fixed: checker.check_coreml_partitions(
                m, fixed, "coreml_supported_neuralnetwork_ops.md"),
            "coreml_mlprogram": lambda m, fixed: checker.check_coreml_partitions(
                m, fixed, "coreml_supported_mlprogram_ops.md"),
        }
        for name, call in calls.items():
            entry = {"as_is": _partitions(call(model, True))}
            if not record["static_shapes"]:
                entry["with_fixed_shapes"] = _partitions(call(model, False))
            record[name] = entry
    return record


def _partitions(info: Any) -> dict[str, Any]:
    nodes = info.num_nodes
    return {"nodes": nodes, "supported_nodes": info.num_supported_nodes,
            "coverage": round(info.num_supported_nodes / nodes, 4) if nodes else 0.0,
            "partitions": info.num_partitions, "unsupported_ops": sorted(info.unsupported_ops),
            "nodes_unsupported_for_dynamic_shapes": info.nodes_unsupported_due_to_dynamic_input,
            "verdict": info.suitability().name}


def _tflite_gpu(path: Path) -> dict[str, Any]:
    try:
        import tensorflow as tf
    except ImportError as error:
        return {"checked": False, "reason": f"TensorFlow's TFLite analyzer is not installed ({error})"}
    text = io.StringIO()
    with contextlib.redirect_stdout(text):  # the analyzer prints its report
        tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
    lines = text.getvalue().splitlines()
    warnings = [line.strip() for line in lines if "GPU COMPATIBILITY WARNING" in line]
    compatible = any("looks compatible with GPU delegate" in line for line in lines)
    return {"tool": "tf.lite.experimental.Analyzer (gpu_compatibility=True)", "tensorflow": tf.__version__,
            "compatible": compatible and not warnings, "warnings": warnings[:20]}


def _xnnpack(path: Path) -> dict[str, Any]:
    tool = shutil.which("litert-benchmark") or str(Path(sys.executable).with_name("litert-benchmark"))
    if not Path(tool).is_file():
        return {"checked": False, "reason": "litert-benchmark (ai-edge-litert) is not on PATH"}
    with tempfile.TemporaryDirectory(prefix="hubedge-litert-") as tmp:
        result = Path(tmp) / "result.json"
        done = subprocess.run([tool, "--model", str(path), "--use_cpu", "--num_runs", "1", "--warmup_runs", "0",
                               "--num_threads", "1", "--result_json", str(result)], capture_output=True, text=True)
        try:
            figures = json.loads(result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            return {"checked": False, "reason": f"litert-benchmark failed: {lines[-1] if lines else done.returncode}"}
    return {"tool": "litert-benchmark (CPU accelerator: XNNPACK)",
            "whole_graph": bool(figures.get("fully_accelerated"))}


def _openvino(path: Path) -> dict[str, Any]:
    try:
        import openvino as ov
    except ImportError as error:
        return {"checked": False, "reason": f"OpenVINO is not installed ({error})"}
    core = ov.Core()
    model = core.read_model(str(path))
    ops = len(model.get_ordered_ops())
    record: dict[str, Any] = {"tool": "openvino.Core.query_model", "openvino": ov.__version__}
    for device in ("CPU", "GPU", "NPU"):
        if device not in core.available_devices:
            record[device.lower()] = {"checked": False, "reason": f"not here: this machine has no OpenVINO {device}"}
            continue
        taken = core.query_model(model, device)
        record[device.lower()] = {"ops": ops, "supported_ops": len(taken), "coverage": round(len(taken) / ops, 4)}
    return record


def offload_shortfall(target: str, deploy: dict[str, Any]) -> str:
    """Why the report falls short of ``--require-offload target`` (empty when it meets it): the vendor tool's own
    top verdict, as the file is."""
    if target in ("nnapi", "coreml"):
        ort = deploy.get("ort_mobile", {"checked": False, "reason": "no ONNX Runtime report for this format"})
        if ort.get("checked") is False:
            return f"not checked: {ort['reason']}"
        names = ["nnapi"] if target == "nnapi" else ["coreml_mlprogram", "coreml_neuralnetwork"]
        best = max((ort[name]["as_is"] for name in names), key=lambda part: (part["verdict"] == "YES",
                                                                             part["coverage"]))
        if best["verdict"] == "YES":
            return ""
        fixed = "" if ort.get("static_shapes") else "; its shapes are dynamic: export with --batch 1"
        lacking = f"; it lacks {', '.join(best['unsupported_ops'][:6])}" if best["unsupported_ops"] else ""
        return (f"{target}: {best['supported_nodes']} of {best['nodes']} nodes in {best['partitions']} partition(s) "
                f"(ONNX Runtime's verdict {best['verdict']}; YES needs one partition over 75 % of the nodes)"
                f"{lacking}{fixed}")
    gpu = deploy.get("gpu_delegate", {"checked": False, "reason": "no GPU delegate report for this format"})
    if gpu.get("checked") is False:
        return f"not checked: {gpu['reason']}"
    if gpu.get("compatible"):
        return ""
    return f"gpu: TF's analyzer finds it incompatible with the GPU delegate ({'; '.join(gpu.get('warnings', [])[:2])})"


def summary_line(deploy: dict[str, Any]) -> str:
    """One phrase for the export summary."""
    parts = []
    ort = deploy.get("ort_mobile")
    if ort and ort.get("checked", True) is not False:
        for name, label in ORT_PROVIDERS.items():
            part = ort[name]["as_is"]
            parts.append(f"{label} {part['supported_nodes']}/{part['nodes']} nodes, {part['partitions']} part. "
                         f"({part['verdict']})")
        if not ort["static_shapes"]:
            parts.append("shapes dynamic: --batch 1 fixes them")
    gpu, xnnpack = deploy.get("gpu_delegate"), deploy.get("xnnpack")
    if gpu and gpu.get("checked", True) is not False:
        parts.append("GPU delegate: " + ("compatible" if gpu["compatible"] else "incompatible"))
    if xnnpack and xnnpack.get("checked", True) is not False:
        parts.append("XNNPACK: " + ("whole graph" if xnnpack["whole_graph"] else "part of the graph"))
    openvino = deploy.get("openvino")
    if openvino and openvino.get("checked", True) is not False and "coverage" in openvino.get("cpu", {}):
        parts.append(f"OpenVINO CPU {openvino['cpu']['supported_ops']}/{openvino['cpu']['ops']} ops")
    missing = [f"{name} not checked" for name, value in deploy.items() if isinstance(value, dict)
               and value.get("checked") is False]
    size = deploy.get("phone_size", {})
    return "; ".join(parts + missing + ([size["note"]] if "note" in size else []))
