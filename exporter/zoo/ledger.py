"""What each job of a catalog run came to, kept beside the artifacts in ``hubedge-jobs.json``.

One entry per job key (``hubedge.exporter.zoo.jobs.JobKey``): the job, its status (``ok`` or ``failed``), the artifact
it wrote or the one-line reason it failed, when and where it ran, and the memory it asked for. Only the run's
driver writes it, atomically after each job, so a killed run loses at most the jobs in flight. A job is up to
date when its entry is ``ok``, its artifact and manifest are there, the manifest carries the same key, and the
artifact's bytes and its recorded FP32 reference still hash to what the manifest records: a tampered, deleted or
re-exported artifact is redone, and so is one whose reference was replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubedge.exporter.fsutil import atomic_path
from hubedge.runtimes.errors import CorruptModelError, HubedgeError, ModelNotFoundError

__all__ = ["LEDGER", "Ledger"]

LEDGER = "hubedge-jobs.json"
SCHEMA = "hubedge.jobs/1"


class Ledger:
    """The jobs of an output folder, by key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LEDGER
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise HubedgeError(f"{self.path} is damaged ({error}); remove it to start the run afresh") from None
            if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("jobs"), dict):
                raise HubedgeError(f"{self.path} is not a hubedge job ledger ({SCHEMA}); remove it or choose another "
                                   "--output")
            self.entries = data["jobs"]

    def up_to_date(self, digest: str) -> bool:
        """Whether the job's artifact is there, intact and made by a job of this key."""
        from hubedge.runtimes.integrity import check_artifact
        from hubedge.runtimes.manifest import read_manifest
        from hubedge.runtimes.reference import read_recorded

        entry = self.entries.get(digest)
        if not entry or entry.get("status") != "ok" or not isinstance(entry.get("artifact"), str):
            return False
        artifact = self.folder / Path(entry["artifact"]).name
        try:
            manifest = read_manifest(artifact)
            if manifest.get("job", {}).get("key") != digest:
                return False
            check_artifact(artifact, manifest)
            if "file" in (manifest.get("reference") or {}):  # the outputs it was verified against, intact
                read_recorded(manifest, self.folder)
        except (ModelNotFoundError, CorruptModelError):
            return False
        return True

    def failed(self) -> set[str]:
        return {digest for digest, entry in self.entries.items() if entry.get("status") == "failed"}

    def record(self, digest: str, entry: dict[str, Any]) -> None:
        """Sets a job's entry and writes the ledger (atomically: a kill leaves the previous one whole)."""
        self.entries[digest] = entry
        content = json.dumps({"schema": SCHEMA, "jobs": self.entries}, indent=1, sort_keys=True)
        with atomic_path(self.path) as temp:
            temp.write_text(content + "\n", encoding="utf-8")
