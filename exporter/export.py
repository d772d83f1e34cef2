"""One export: convert, verify against the FP32 reference, write the manifest, publish atomically.

The artifact and its manifest are built under a temporary name; only when the artifact has been loaded
through its runtime and met its precision's floor are they renamed into place (artifact first, manifest
last, so a manifest always means a finished artifact).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

import calibration_data
import runtimes
from exporter.formats import Format
from exporter.fsutil import atomic_path, ensure_writable_dir
from exporter.manifest import build_manifest, write_manifest
from exporter.sources import LoadedModel
from runtimes.agreement import summarize
from runtimes.errors import HubedgeError
from runtimes.manifest import manifest_path
from runtimes.memory import PeakMemory
from runtimes.modelinfo import ModelInfo
from runtimes.preprocess import preprocess


class VerificationFailed(HubedgeError):
    """An artifact fell below its precision's floor; it is not published."""


@dataclasses.dataclass
class ExportResult:
    artifact: Path
    format: str
    precision: str
    size_bytes: int
    seconds: float
    peak_rss_mb: int
    verification: dict[str, Any]


def verification_images(size: int) -> np.ndarray:
    """The held-apart photos (never calibration photos), preprocessed at ``size``."""
    return preprocess(calibration_data.evaluation_photos(), size)


def verification_device(fmt: Format) -> str:
    """The first of the format's devices present here: a qnn artifact is judged on the NPU's arithmetic."""
    from runtimes.devices import status

    return next((d for d in fmt.devices if status(fmt.runtime, d).available), "cpu")


def verify(artifact: Path, fmt: Format, precision: str, reference_outputs: np.ndarray, images: np.ndarray,
           info: ModelInfo) -> dict[str, Any]:
    """Runs ``artifact`` through its runtime and compares with the reference outputs on the same images."""
    device = verification_device(fmt)
    predictor = runtimes.load(artifact, device=device, strict=True)
    outputs = predictor.predict(images)
    figures = summarize(reference_outputs, outputs, info.task, info.activation)
    floor = fmt.floors[precision]
    failures = floor.failures(figures)
    note = predictor.device_status.note if predictor.device_status else ""
    return {"passed": not failures, "floor": dataclasses.asdict(floor), "failures": failures,
            "image_set": "held-apart bundled photos", "runtime": fmt.runtime, "device": device,
            **({"device_note": note} if note else {}), **figures}


def export_one(loaded: LoadedModel, fmt: Format, precision: str, output_dir: Path, verify_output: bool = True,
               reference_outputs: np.ndarray | None = None, options: dict[str, Any] | None = None) -> ExportResult:
    """Exports ``loaded`` to one format and precision under ``output_dir``.

    ``options``: ``calibration`` (a callable returning the CalibrationSet) and ``int8_io`` for the formats
    that use them.
    """
    ensure_writable_dir(output_dir)
    final = output_dir / fmt.artifact_name(loaded.info.name, precision)
    started = time.perf_counter()
    with atomic_path(final, directory=fmt.is_directory, companions=fmt.companions) as temp:
        with PeakMemory() as peak:
            result = fmt.exporter().export(loaded, precision, temp, options or {})
        seconds = time.perf_counter() - started
        manifest = build_manifest(loaded, fmt, precision, temp, result, seconds)
        manifest["export_peak_rss_mb"] = round(max(peak.bytes, result.child_peak_rss_bytes) / 2**20)
        manifest["verification"] = {"skipped": "--no-verify"}
        write_manifest(manifest_path(temp), manifest)
        if verify_output:
            images = verification_images(loaded.info.input_size)
            if reference_outputs is None:
                reference_outputs = loaded.reference().predict(images)
            verification = verify(temp, fmt, precision, reference_outputs, images, loaded.info)
            manifest["verification"] = verification
            if not verification["passed"]:
                raise VerificationFailed(
                    f"{final.name} FAILED verification ({'; '.join(verification['failures'])}); not written"
                )
        manifest_path(temp).unlink()
        final_manifest = manifest_path(final)
        final_manifest.unlink(missing_ok=True)  # an old manifest must never describe the new artifact
    with atomic_path(final_manifest) as temp_file:
        write_manifest(temp_file, manifest)
    return ExportResult(final, fmt.name, precision, manifest["artifact"]["size_bytes"], seconds,
                        manifest["export_peak_rss_mb"],
                        manifest["verification"])
