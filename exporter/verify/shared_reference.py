"""One FP32 reference per model in a catalog run, not one per job.

Each job of a catalog run is a fresh worker process, so without this every job of a model would compute the
TensorFlow FP32 outputs on the 132 evaluation images again (about 14 s for a BiT-M R50x1 on one thread, as long as
some conversions). A job reuses the outputs an earlier job recorded beside its artifact only when that earlier
manifest proves they are the ones this job would compute: the same weights identity and the same tool versions
(the job key's ``weights`` and ``versions``), a reference file that still hashes to what the manifest records and
fits the model, and the very same input batch (``hubedge.runtimes.reference.batch_sha256``). Anything less and the job
computes its own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes.errors import CorruptModelError
from hubedge.runtimes.reference import batch_sha256, read_recorded

__all__ = ["SharedReference", "recorded_reference"]

MANIFEST_GLOB = "*.json"


@dataclasses.dataclass(frozen=True)
class SharedReference:
    """Outputs recorded by an earlier job of the same weights, and the manifest that vouches for them."""

    outputs: np.ndarray
    manifest: str


def recorded_reference(folder: Path, job: dict[str, Any], images: np.ndarray) -> SharedReference | None:
    """The reference outputs some manifest in ``folder`` recorded for this job's weights, tools and ``images``;
    None when there is none that passes every check."""
    wanted = batch_sha256(images)
    for path in sorted(folder.glob(MANIFEST_GLOB)):
        manifest = _manifest(path)
        if manifest is None:
            continue
        earlier, record = manifest["job"], manifest.get("reference")
        if not isinstance(record, dict) or any(earlier.get(key) != job.get(key) for key in ("weights", "versions")) \
                or record.get("input_sha256") != wanted or record.get("images") != len(images):
            continue
        try:
            recorded = read_recorded(manifest, folder)
        except (CorruptModelError, AttributeError, KeyError, OSError, TypeError, ValueError):
            continue  # not a manifest of hubedge's making, or its reference is gone: look further
        return SharedReference(recorded.outputs, path.name)
    return None


def _manifest(path: Path) -> dict[str, Any] | None:
    """A hubedge manifest written by a catalog job, or None for any other JSON file (the ledger, a report)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
        return None
    return data
