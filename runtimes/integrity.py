"""Is this file the one its manifest describes, and does a manifest name only files beside it?

A manifest records the sha256 of its artifact (and of companions such as OpenVINO's ``.bin``) and the names of
the files it relies on (the recorded reference). ``hubedge.runtimes.load`` refuses an artifact whose bytes are not the
ones exported and verified, before any runtime parses them, and every reader refuses a name that is not a plain
file name in the artifact's folder (``../../etc/passwd``, a symlink that leads elsewhere). A file that matches
is not thereby safe: whoever can write the artifact can write its manifest too (docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from hubedge.runtimes.contract import ONNX_DATA_SUFFIX
from hubedge.runtimes.errors import CorruptModelError

__all__ = ["check_artifact", "member", "sha256_of"]

CHUNK = 1 << 20
# files a runtime reads beside the artifact it is given, by the artifact's suffix: these must be in the manifest
RUNTIME_COMPANIONS = {".xml": (".bin",)}
# files a runtime reads beside the artifact when they are there (ONNX's external data, named inside the .onnx file,
# which is hashed): present, they must be in the manifest too
PRESENT_COMPANIONS = {".onnx": (ONNX_DATA_SUFFIX,)}
_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # regular files already hashed in this process, by identity


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a directory's relative file names and contents in sorted order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file is not path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def member(directory: Path, name: Any, what: str) -> Path:
    """``directory / name`` for a plain file name that stays inside ``directory`` once links are resolved;
    CorruptModelError for anything else (a path, ``..``, a link out of the folder)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "\0" in name or name != Path(name).name \
            or "\\" in name:
        raise CorruptModelError(f"the manifest names {what} {name!r}, which is not a file name in {directory}; "
                                "a manifest may only name files beside it")
    path = directory / name
    root = directory.resolve()
    if path.exists() and root not in path.resolve().parents:
        raise CorruptModelError(f"{what} {path} leads out of {directory} (a link to {path.resolve()}); refused")
    return path


def _identity(path: Path) -> tuple[str, int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino) if path.is_file() else None


def _check_file(path: Path, expected: Any, what: str) -> None:
    if not isinstance(expected, str) or len(expected) != 64:
        raise CorruptModelError(f"the manifest of {path.name} records no sha256 for {what}; re-export it")
    key = _identity(path)
    if key is not None and _VERIFIED.get(key) == expected:
        return
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise CorruptModelError(f"cannot read {path}: {error}") from None
    if actual != expected:
        raise CorruptModelError(f"{path.name} is not the file its manifest describes (sha256 {actual[:12]}…, the "
                                f"manifest says {expected[:12]}…): it was changed or swapped after export; refused. "
                                "Copy the matching artifact and manifest, or re-export")
    if key is not None:
        _VERIFIED[key] = actual


def check_artifact(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Refuses ``path`` unless it, and every companion file its runtime reads, hash to what ``manifest`` records."""
    path = Path(path)
    record = manifest.get("artifact")
    if not isinstance(record, dict):
        raise CorruptModelError(f"the manifest of {path.name} has no artifact record; re-export it")
    _check_file(path, record.get("sha256"), "the artifact")
    companions = record.get("companions") or {}
    if not isinstance(companions, dict):
        raise CorruptModelError(f"the manifest of {path.name} has a damaged companions record; re-export it")
    present = [suffix for suffix in PRESENT_COMPANIONS.get(path.suffix, ()) if path.with_suffix(suffix).exists()]
    for suffix in (*RUNTIME_COMPANIONS.get(path.suffix, ()), *present):
        if path.with_suffix(suffix).name not in companions:
            raise CorruptModelError(f"the manifest of {path.name} records no sha256 for {path.with_suffix(suffix).name}"
                                    ", which its runtime reads; re-export it")
    for name, expected in companions.items():
        companion = member(path.parent, name, "the companion file")
        if not companion.is_file():
            raise CorruptModelError(f"{companion} is missing; copy it with {path.name} and its manifest")
        _check_file(companion, expected, name)
