"""File-system helpers: atomic writes and content hashes.

Artifacts are written under a hidden temporary name beside their destination and renamed only when
complete, so an interrupted or failed export never leaves anything that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hubedge.runtimes.errors import HubedgeError
from hubedge.runtimes.integrity import sha256_of  # one hash for writers and readers

__all__ = ["TEMP_PREFIX", "WORK_PREFIX", "atomic_path", "ensure_writable_dir", "remove_stale_work", "sha256_of",
    "size_of", "work_prefix"]

TEMP_PREFIX = ".hubedge-tmp-"  # an artifact being written
WORK_PREFIX = ".hubedge-work-"  # a run's scratch space


def work_prefix(kind: str) -> str:
    """``kind`` followed by this host and process, so that a later run can tell a dead run's folders from a live
    one's: ``.hubedge-tmp-<host>-<pid>-``."""
    return f"{kind}{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_work(folder: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """Removes the hidden folders that runs on this host left in ``folder`` when they were killed (their process
    is gone), telling ``say`` of each; returns them. Folders of live processes, and of other hosts, are left
    alone."""
    host, removed = socket.gethostname(), []
    for path in folder.iterdir() if folder.is_dir() else ():
        kind = next((kind for kind in (TEMP_PREFIX, WORK_PREFIX) if path.name.startswith(kind)), None)
        if kind is None or not path.is_dir():
            continue
        name = path.name[len(kind):]
        if not name.startswith(f"{host}-"):
            continue
        pid = name[len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(path)
            removed.append(path)
            if say is not None:
                say(f"note: removed {path.name}, left by an earlier run on this host that was killed")
    return removed


def ensure_writable_dir(directory: Path) -> Path:
    """Creates ``directory`` if needed and checks that files can be written there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HubedgeError(f"cannot create the output folder {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise HubedgeError(f"the output folder {directory} is not writable; choose another with --output")
    return directory


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: Path, directory: bool = False, companions: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; on success it replaces ``final``, on any error it vanishes.

    ``companions`` are suffixes of files written beside the temporary path (OpenVINO's ``.bin``); they are
    moved first, so the main file never appears before the files it needs. ``optional`` companions (ONNX's data
    file) move when they were written; when not, one that an earlier export left beside ``final`` is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=work_prefix(TEMP_PREFIX), dir=final.parent))
    target = temp / final.name
    try:
        if directory:
            target.mkdir()
        yield target
        if final.exists():
            _remove(final)
        for suffix in companions:
            os.replace(target.with_suffix(suffix), final.with_suffix(suffix))
        for suffix in optional:
            if target.with_suffix(suffix).exists():
                os.replace(target.with_suffix(suffix), final.with_suffix(suffix))
            else:
                _remove(final.with_suffix(suffix))
        os.replace(target, final)
    finally:
        _remove(temp)


def size_of(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
