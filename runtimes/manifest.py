"""Reading artifact manifests: the JSON file beside every artifact that tells a runtime what it holds.

The exporter writes manifests (``hubedge.exporter.manifest``); runtimes only read them, so the schema's name and the
rule that pairs an artifact with its manifest live here, on the edge side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hubedge.runtimes.errors import CorruptModelError, ModelNotFoundError
from hubedge.runtimes.modelinfo import ModelInfo

__all__ = ["SCHEMA", "fixed_input_size", "has_manifest", "jsonable", "manifest_path", "model_info", "read_manifest"]

SCHEMA = "hubedge.manifest/1"


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats (an SQNR of identical outputs is +inf) as null: strict JSON for any parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def manifest_path(artifact: str | Path) -> Path:
    """The manifest beside an artifact: its last suffix replaced by ``.json``.

    ``m.onnx.int8.onnx`` → ``m.onnx.int8.json``; ``m.savedmodel.fp32.savedmodel/`` → ``m.savedmodel.fp32.json``.
    The rule depends on the name alone, never on what exists yet, so writers and readers always agree.
    """
    path = Path(artifact)
    if not path.suffix:
        raise ModelNotFoundError(f"{path} is not an artifact name (<model>.<format>.<precision>.<suffix>)")
    return path.with_suffix(".json")


def has_manifest(artifact: str | Path) -> bool:
    """Whether ``artifact`` exists and is named like an artifact with its manifest beside it."""
    path = Path(artifact)
    return path.exists() and bool(path.suffix) and manifest_path(path).is_file()


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    """The manifest of ``artifact``, checked for the schema this version understands."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise ModelNotFoundError(f"artifact not found: {artifact}")
    path = manifest_path(artifact)
    if not path.is_file():
        raise ModelNotFoundError(
            f"{artifact} has no manifest ({path.name} beside it); export it with 'hubedge export' to get one"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptModelError(f"cannot read the manifest {path}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise CorruptModelError(f"{path} is not a hubedge manifest of schema {SCHEMA} (found {found!r})")
    problem = _shape_problem(manifest)
    if problem:
        raise CorruptModelError(f"{path} is damaged: {problem}; re-export the artifact")
    return manifest


# what readers take from a manifest, and the JSON type each must have (required, then optional)
_REQUIRED = {"artifact": dict, "format": str, "precision": str, "runtime": str, "model": dict}
_OPTIONAL = {"input": dict, "output": dict, "weights": dict, "reference": dict, "cpu_classes": dict,
             "devices": list, "io": dict, "graph": dict, "verification": dict, "quantization": dict}


def _shape_problem(manifest: dict[str, Any]) -> str:
    """What makes ``manifest`` unusable by the readers (a missing section, a wrong JSON type), or ``""``."""
    for key, kind in (*_REQUIRED.items(), *_OPTIONAL.items()):
        if key not in manifest:
            if key in _REQUIRED:
                return f"it has no {key!r}"
            continue
        if not isinstance(manifest[key], kind):
            return f"its {key!r} is a {type(manifest[key]).__name__}, not a JSON {kind.__name__}"
    try:
        ModelInfo.from_dict(manifest["model"])
    except (TypeError, ValueError) as error:
        return f"its model record is unusable ({error})"
    artifact = manifest["artifact"]
    if not isinstance(artifact.get("file"), str) or not isinstance(artifact.get("sha256"), str):
        return "its artifact record lacks the file name or the sha256"
    shape = manifest.get("input", {}).get("shape", [None, None, None, 3])
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 16) for d in shape):
        return f"its input shape {shape!r} is not [batch, height, width, channels]"
    right_on = manifest.get("cpu_classes", {}).get("right_on", [])
    if not isinstance(right_on, list) or not all(isinstance(name, str) for name in right_on):
        return "its cpu_classes.right_on is not a list of CPU class names"
    not_on = manifest.get("cpu_classes", {}).get("not_on", {})
    if not isinstance(not_on, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in not_on.items()):
        return "its cpu_classes.not_on is not a map of CPU class names to reasons"
    if not all(isinstance(device, str) for device in manifest.get("devices", [])):
        return "its devices are not a list of names"
    return ""


def model_info(manifest: dict[str, Any]) -> ModelInfo:
    """The ModelInfo recorded in a manifest."""
    try:
        return ModelInfo.from_dict(manifest["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptModelError(f"the manifest's model section is damaged: {error}") from None


def fixed_input_size(manifest: dict[str, Any]) -> int | None:
    """The square side of a fixed-size artifact, or None when its spatial dimensions are free."""
    shape = manifest.get("input", {}).get("shape", [None, None, None, 3])
    return shape[1] if isinstance(shape[1], int) and shape[1] == shape[2] else None
