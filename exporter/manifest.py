"""Writing the manifest beside each artifact: everything a runtime and an auditor need to trust it.

Schema ``hubedge.manifest/1`` (read by ``hubedge.runtimes.manifest``): what the model is and where its weights came
from (with a hash; seeded weights said plainly), the format and precision, the input and output contracts,
the quantization recipe, the verification against the FP32 reference, tool versions and the file's sha256.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from hubedge import __version__
from hubedge.exporter.formats import Format, FormatResult
from hubedge.exporter.fsutil import sha256_of, size_of
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.manifest import SCHEMA, jsonable

BASE_TOOLS = ("numpy", "pillow")


def tool_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"hubedge": __version__, "python": platform.python_version()}
    for name in (*BASE_TOOLS, *names):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(
    loaded: LoadedModel,
    fmt: Format,
    precision: str,
    artifact: Path,
    result: FormatResult,
    seconds: float,
) -> dict[str, Any]:
    info = result.info or loaded.info
    optional = [artifact.with_suffix(suffix) for suffix in fmt.optional_companions]
    files = [artifact, *(artifact.with_suffix(suffix) for suffix in fmt.companions),
             *(path for path in optional if path.exists())]
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "artifact": {
            "file": artifact.name,
            "sha256": sha256_of(artifact),
            "size_bytes": sum(size_of(p) for p in files),
            "companions": {p.name: sha256_of(p) for p in files[1:]},
        },
        "format": fmt.name,
        "precision": precision,
        **({"variant": "accuracy-aware"} if "accuracy_aware" in result.recipe else {}),  # exporter.quantize.accuracy
        "runtime": fmt.runtime,
        "devices": list(fmt.devices),
        "model": info.to_dict(),
        "weights": loaded.weights_record(),
        "graph": loaded.graph or {"route": "as-is", "why": "no route chosen"},  # exporter.graph.reauthor
        "input": {
            "shape": result.input_shape,
            # fixed: every shape in the file is static at this batch (--batch, or the format's own: tflite, qnn)
            "batch": result.input_shape[0] if result.input_shape[0] is not None else "dynamic",
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NHWC",
            "color": "RGB",
            "preprocessing": f"centre square crop, bilinear resize to {info.input_size}, /255",
            **({"quantization": result.io["input"]} if "input" in result.io else {}),
        },
        "output": {
            "task": info.task,
            "num_outputs": info.num_outputs,
            "meaning": ("features" if info.task != "classification" else
                        f"scores ({info.activation} applied in the graph)" if info.activation_in_graph else "logits"),
            "activation": info.activation,
            "labels": info.labels,
            **({"quantization": result.io["output"]} if "output" in result.io else {}),
        },
        "quantization": result.recipe,
        # which CPU classes (runtimes.cpu) the recipe is meant to be right on, and what a runtime must set for it;
        # the classes it was verified on are in verification.cpu_classes
        "cpu_classes": {"right_on": list(result.right_on),
                        **({"unproven": result.unproven} if result.unproven else {}),
                        **({"not_on": result.not_on} if result.not_on else {}),
                        **({"runtime_settings": result.runtime_settings} if result.runtime_settings else {})},
        "export_seconds": round(seconds, 2),
        "tools": tool_versions(result.tools),
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(jsonable(manifest), indent=2, allow_nan=False) + "\n", encoding="utf-8")
