"""What a catalog run exports: one job per (model, format, precision), each with a content key.

A job's key names everything its artifact depends on: the weights (``hubedge.exporter.sources.weights_identity``, which
needs no model load), the format, the precision, every export option, the calibration photos' hashes (int8), and
the versions of hubedge and the converters. Two runs that would write the same bytes get the same key; any change
gives another, so a re-run redoes exactly the jobs whose inputs changed (``hubedge.exporter.zoo.ledger``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Any

from hubedge.exporter.sources import catalog
from hubedge.exporter.formats import Format
from hubedge.exporter.options import ExportOptions
from hubedge.runtimes.errors import ModelNotFoundError

__all__ = ["CONVERTERS", "Job", "JobKey", "expand_models", "plan_jobs"]

GLOB_CHARACTERS = "*?["
# bump when what an export writes or how it is verified changes for the same inputs and tool versions (hubedge's
# own version changes only at releases): 2 = fp16 ONNX in topological order, the full ONNX check, float
# artifacts emulated on 11 photos; 3 = ONNX ops rewritten for mobile accelerators (Reciprocal as Div), the
# deployability report, arm64 classes
RECIPES = 3
# the packages whose versions change what an export writes (hubedge's own version is in the key too)
CONVERTERS = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-qnn", "openvino", "nncf", "ai-edge-litert",
              "mediapipe", "numpy", "pillow")


def expand_models(patterns: list[str]) -> list[str]:
    """Each ``--model`` item as the models it names, in order and once each: shell-style globs over the catalog's
    names (``'expert-*'``), anything else as given (a name, a handle, a URL or a path). A glob that matches
    nothing is refused in one line."""
    models: list[str] = []
    for pattern in (item.strip() for text in patterns for item in text.split(",")):
        if not pattern:
            continue
        if any(character in pattern for character in GLOB_CHARACTERS) and not Path(pattern).expanduser().exists():
            matched = [spec.name for spec in catalog.all_models() if fnmatch.fnmatchcase(spec.name, pattern)]
            if not matched:
                raise ModelNotFoundError(f"--model {pattern!r} matches no catalog name; 'hubedge models' lists them")
            models += matched
        else:
            models.append(pattern)
    return list(dict.fromkeys(models))


@dataclasses.dataclass(frozen=True)
class Job:
    """One export: a model (as the user named it), its weights, one format and one precision, with the options."""

    model: str
    weights: str
    twin_form: str
    format: str
    precision: str
    options: ExportOptions = ExportOptions()

    @property
    def label(self) -> str:
        return f"{self.model} {self.format} {self.precision}"


@dataclasses.dataclass(frozen=True)
class JobKey:
    """A job's content key: ``digest`` is the sha256 of ``record``, which the manifest keeps as ``job``."""

    record: dict[str, Any]
    digest: str

    @classmethod
    def of(cls, job: Job, versions: dict[str, str]) -> JobKey:
        from hubedge.exporter.sources import weights_identity

        record = {  # the model as named is left out: two names of one model write the same artifact
            "weights": weights_identity(job.model, job.weights, job.twin_form),
            "format": job.format, "precision": job.precision, "options": options_record(job.options),
            "calibration": calibration_identity(job.options) if job.precision == "int8" else None,
            "versions": versions, "recipes": RECIPES,
        }
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        return cls(record, digest)


def options_record(options: ExportOptions) -> dict[str, Any]:
    """Every export option, in a form that is the same for the same choice (paths resolved, targets as text)."""
    record: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if field.name == "calibration_data" and value is not None:
            value = str(Path(value).expanduser().resolve())
        elif field.name == "accuracy_target" and value is not None:
            value = value.spec
        record[field.name] = value
    return record


def calibration_identity(options: ExportOptions) -> str:
    """The sha256 of the calibration photos' own hashes and the sample count: the set an int8 job calibrates on,
    known before any image is decoded."""
    from hubedge.exporter.quantize.calibration import usable_images
    from hubedge.exporter.fsutil import sha256_of

    _, files = usable_images(options.calibration_data)
    digest = hashlib.sha256(f"samples={options.calibration_size}".encode())
    for path in sorted(files, key=lambda path: path.name):
        digest.update(f"{path.name}:{sha256_of(path)}".encode())
    return digest.hexdigest()


def plan_jobs(models: list[str], weights: str, twin_form: str, pairs: list[tuple[Format, str]],
              options: ExportOptions) -> list[Job]:
    """Every (model, format, precision) job, each with only the options its format takes at its precision."""
    return [Job(model, weights, twin_form, fmt.name, precision, fmt.options_for(precision, options))
            for model in models for fmt, precision in pairs]
