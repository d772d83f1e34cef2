"""Runs an artifact through its runtime in a child process, so that a runtime that aborts on it is one clear error
instead of the end of the calling process.

Why: native runtimes do not always fail politely. LiteRT once aborted the whole process (SIGABRT) right after
creating the XNNPACK delegate for a TFLite int8 model whose activation ranges were degenerate, and a damaged or
hostile file can do the same to any of them. Export verification is the first thing to load every new artifact,
and ``hubedge predict`` and ``hubedge bench`` load files a user was handed; in a child, a crash is one line saying
which runtime crashed on which artifact, and the caller goes on (an export removes its temporary files like
those of any failed export).

The child imports ``runtimes`` only, and so TensorFlow only for a SavedModel artifact. Images go in, and
outputs come back, as ``.npy`` files in a temporary folder. The report is a small JSON file.

The child can run under a CPU emulator (``exporter.cpu_emulation``), so that an artifact is verified as the
runtime behaves on another CPU class; the report then carries the CPU the child saw, and a child that did not
see the class it was started as is refused rather than counted.

Run as ``python -m runtimes.isolated ARTIFACT DEVICE IMAGES.npy OUTPUTS.npy REPORT.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtimes import errors
from runtimes.cpu import EMULATION_ENV, machine_record
from runtimes.devices import DeviceUnavailableError
from runtimes.errors import HubedgeError

__all__ = ["EmulationFailed", "Emulator", "IsolatedRun", "RuntimeCrashed", "predict_isolated", "run_isolated"]


class Emulator(Protocol):
    """What runs the child as another CPU class (``exporter.cpu_emulation.Emulator`` is one)."""

    prefix: tuple[str, ...]
    description: str
    cpu_class: str


ERROR_TYPES = {cls.__name__: cls for cls in (*vars(errors).values(), DeviceUnavailableError)
               if isinstance(cls, type) and issubclass(cls, HubedgeError)}


class RuntimeCrashed(HubedgeError):
    """The runtime killed its process while loading or running an artifact."""


LENIENT = "--lenient"  # load without strict=True: for a control that runs an artifact off its CPU classes
THREADS = "--threads"
TIMEOUT_S = 900  # a child that neither finishes nor crashes in this time is stopped: a hang is an error too


def child_command(artifact: Path, device: str, images: Path, outputs: Path, report: Path,
                  strict: bool = True, threads: int | None = None) -> list[str]:
    return [sys.executable, "-m", "runtimes.isolated", str(artifact), device, str(images), str(outputs),
            str(report), *([] if strict else [LENIENT]), *([THREADS, str(threads)] if threads else [])]


class EmulationFailed(HubedgeError):
    """The child ran under an emulator but saw another CPU class than the one it was meant to run as."""


@dataclasses.dataclass(frozen=True)
class IsolatedRun:
    """What a child's run of an artifact gave: its outputs, the device note, the CPU it saw, and the warnings
    ``runtimes.load`` raised there (one line each)."""

    outputs: np.ndarray
    device_note: str
    cpu: dict[str, Any]
    warnings: tuple[str, ...] = ()


def run_isolated(artifact: Path, device: str, images: np.ndarray, emulator: Emulator | None = None,
                 strict: bool = True, threads: int | None = None,
                 timeout_s: float | None = TIMEOUT_S) -> IsolatedRun:
    """``runtimes.load(artifact, device, threads, strict).predict(images)`` in a child process.

    ``emulator`` runs the child as another CPU class. Raises the child's HubedgeError as the same type. If the
    runtime crashed the child, or it ran past ``timeout_s`` (None: no limit), raises :class:`RuntimeCrashed`,
    quoting the last line the runtime printed.
    """
    with tempfile.TemporaryDirectory(prefix="hubedge-isolated-") as work:
        paths = {name: Path(work) / name for name in ("images.npy", "outputs.npy", "report.json", "log")}
        return _run_child(Path(artifact), device, images, paths, emulator, strict, threads, timeout_s)


def predict_isolated(artifact: Path, device: str, images: np.ndarray, emulator: Emulator | None = None,
                     strict: bool = True) -> tuple[np.ndarray, str, dict[str, Any]]:
    """:func:`run_isolated`'s outputs, device note and CPU record, as export verification uses them (no time
    limit: a large model verified under a CPU emulator takes long)."""
    run = run_isolated(artifact, device, images, emulator, strict, timeout_s=None)
    return run.outputs, run.device_note, run.cpu


def _run_child(artifact: Path, device: str, images: np.ndarray, paths: dict[str, Path], emulator: Emulator | None,
               strict: bool, threads: int | None, timeout_s: float | None) -> IsolatedRun:
    np.save(paths["images.npy"], images)
    command = child_command(artifact, device, paths["images.npy"], paths["outputs.npy"], paths["report.json"],
                            strict, threads)
    env = dict(os.environ)
    if emulator is not None:
        command = [*emulator.prefix, *command]
        env[EMULATION_ENV] = emulator.description
    timed_out = False
    with open(paths["log"], "w+", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
        except BaseException:  # Ctrl-C must not leave a runtime running on its own
            process.kill()
            process.wait()
            raise
        log.seek(0)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    report = _read_report(paths["report.json"])
    if timed_out:
        raise RuntimeCrashed(f"the runtime did not finish loading or running {artifact.name} on the {device} in "
                             f"{timeout_s:.0f} s and was stopped; the artifact is damaged, or this runtime cannot "
                             "run it")
    if "error" in report:
        raise ERROR_TYPES.get(report["error"], HubedgeError)(report.get("message", "the runtime failed"))
    if process.returncode != 0 or "device_note" not in report:
        raise RuntimeCrashed(_crash_message(artifact, device, process.returncode, lines))
    cpu = report.get("cpu", {})
    if emulator is not None and cpu.get("class") != emulator.cpu_class:
        raise EmulationFailed(f"{emulator.description} was to run {artifact.name} as a {emulator.cpu_class} CPU, but "
                              f"the runtime saw a {cpu.get('class', 'unknown')} CPU; the emulated check is void")
    return IsolatedRun(np.load(paths["outputs.npy"]), report["device_note"], cpu, tuple(report.get("warnings", ())))


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _crash_message(artifact: Path, device: str, returncode: int, lines: list[str]) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    said = f"; it last printed: {lines[-1][:200]}" if lines else ""
    return (f"the runtime crashed while loading or running {artifact.name} on the {device} (its process {how}"
            f"{said}); the artifact is damaged, or this runtime cannot run it")


def main(argv: list[str]) -> int:
    import warnings

    import runtimes

    strict = LENIENT not in argv
    threads = None
    if THREADS in argv:
        at = argv.index(THREADS)
        threads = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    artifact, device, images, outputs, report = [arg for arg in argv if arg != LENIENT]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor = runtimes.load(artifact, device=device, threads=threads, strict=strict)
        np.save(outputs, predictor.predict(np.load(images)))
        note = predictor.device_status.note if predictor.device_status else ""
        Path(report).write_text(json.dumps({"device_note": note, "cpu": machine_record(),
                                            "warnings": [str(w.message) for w in caught]}))
        return 0
    except HubedgeError as error:
        Path(report).write_text(json.dumps({"error": type(error).__name__, "message": str(error)}))
        return 2


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
