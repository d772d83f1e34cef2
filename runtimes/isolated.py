"""Runs an artifact through its runtime in a child process, so that a runtime that aborts on it is one clear error
instead of the end of the calling process.

Why: native runtimes do not always fail politely. LiteRT once aborted the whole process (SIGABRT) right after
creating the XNNPACK delegate for a TFLite int8 model whose activation ranges were degenerate, and a damaged or
hostile file can do the same to any of them. Export verification is the first thing to load every new artifact,
and ``hubedge predict`` and ``hubedge bench`` load files a user was handed; in a child, a crash is one line saying
which runtime crashed on which artifact, and the caller goes on (an export removes its temporary files like
those of any failed export).

The child imports ``hubedge.runtimes`` only, and so TensorFlow only for a SavedModel artifact. Images go in, and
outputs come back, as ``.npy`` files in a temporary folder. The report is a small JSON file. The child runs the
images a chunk at a time and writes how many are done beside the report (``progress``), so that a caller can say how
far a long verification is (``hubedge.runtimes.progress``).

The child can run under a CPU emulator (``hubedge.exporter.verify.cpu_emulation``), so that an artifact is verified as
the runtime behaves on another CPU class; the report then carries the CPU the child saw, and a child that did not
see the class it was started as is refused rather than counted.

Run as ``python -m hubedge.runtimes.isolated ARTIFACT DEVICE IMAGES.npy OUTPUTS.npy REPORT.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hubedge.runtimes import errors
from hubedge.runtimes.cpu import EMULATION_ENV, machine_record
from hubedge.runtimes.devices import DeviceUnavailableError
from hubedge.runtimes.errors import HubedgeError
from hubedge.runtimes.progress import predict_in_chunks

__all__ = ["CPU_BUDGET_ENV", "EmulationFailed", "Emulator", "IsolatedRun", "RuntimeCrashed", "cpu_budget",
           "predict_isolated", "run_isolated"]


class Emulator(Protocol):
    """What runs the child as another CPU class (``hubedge.exporter.verify.cpu_emulation.Emulator`` is one): a command
    prefix, the interpreter it runs (None: this one; an aarch64 Python for arm64) and what it adds to the
    environment."""

    prefix: tuple[str, ...]
    description: str
    cpu_class: str
    python: str | None
    env: tuple[tuple[str, str], ...]


ERROR_TYPES = {cls.__name__: cls for cls in (*vars(errors).values(), DeviceUnavailableError)
               if isinstance(cls, type) and issubclass(cls, HubedgeError)}


class RuntimeCrashed(HubedgeError):
    """The runtime killed its process while loading or running an artifact."""


LENIENT = "--lenient"  # load without strict=True: for a control that runs an artifact off its CPU classes
THREADS = "--threads"
CORE = "--core"  # the child pins itself to this one CPU core before it loads anything
TIMEOUT_S = 900  # a child that neither finishes nor crashes in this time is stopped: a hang is an error too
MAX_SHARDS = 8  # children of one sharded run at most: each holds its own copy of the model


def child_command(artifact: Path, device: str, images: Path, outputs: Path, report: Path,
                  strict: bool = True, threads: int | None = None, core: int | None = None,
                  python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "hubedge.runtimes.isolated", str(artifact), device, str(images),
            str(outputs), str(report), *([] if strict else [LENIENT]), *([THREADS, str(threads)] if threads else []),
            *([CORE, str(core)] if core is not None else [])]


class EmulationFailed(HubedgeError):
    """The child ran under an emulator but saw another CPU class than the one it was meant to run as."""


@dataclasses.dataclass(frozen=True)
class IsolatedRun:
    """What a child's run of an artifact gave: its outputs, the device note, the CPU it saw, and the warnings
    ``hubedge.runtimes.load`` raised there (one line each)."""

    outputs: np.ndarray
    device_note: str
    cpu: dict[str, Any]
    warnings: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()  # the CPU cores the child was allowed to run on, as it saw them


OnDone = Callable[[int], None]  # hears how many images are done so far


def run_isolated(artifact: Path, device: str, images: np.ndarray, emulator: Emulator | None = None,
                 strict: bool = True, threads: int | None = None,
                 timeout_s: float | None = TIMEOUT_S, on_done: OnDone | None = None) -> IsolatedRun:
    """``hubedge.runtimes.load(artifact, device, threads, strict).predict(images)`` in a child process.

    ``emulator`` runs the child as another CPU class. Raises the child's HubedgeError as the same type. If the
    runtime crashed the child, or it ran past ``timeout_s`` (None: no limit), raises :class:`RuntimeCrashed`,
    quoting the last line the runtime printed. With no time limit, ``on_done`` hears how many images the child has
    run, as it goes.
    """
    with tempfile.TemporaryDirectory(prefix="hubedge-isolated-") as work:
        child = _Child(Path(artifact), device, images, Path(work), emulator, strict, threads)
        try:
            child.start()
            if on_done is not None and timeout_s is None:
                return _collect_as_they_end([child], on_done)[0]
            return child.collect(timeout_s)
        except BaseException:  # Ctrl-C must not leave a runtime running on its own
            _stop_all([child])
            raise


CPU_BUDGET_ENV = "HUBEDGE_JOB_CPUS"


def cpu_budget() -> int | None:
    """The CPUs a catalog job declared to Ray (``--job-cpus``), which it sets in :data:`CPU_BUDGET_ENV`:
    verification runs one unpinned child with that many threads, since Ray does not say which cores are the
    job's, and jobs beside it on the node would otherwise pin their children to the same ones."""
    value = os.environ.get(CPU_BUDGET_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def predict_isolated(artifact: Path, device: str, images: np.ndarray, emulator: Emulator | None = None,
                     strict: bool = True, one_core_each: bool = False,
                     on_done: OnDone | None = None) -> tuple[np.ndarray, str, dict[str, Any]]:
    """:func:`run_isolated`'s outputs, device note and CPU record, as export verification uses them (no time
    limit: a large model verified under a CPU emulator takes long).

    ``one_core_each`` shares the images among one child per CPU core this process may use (at most
    :data:`MAX_SHARDS`), each pinned to its core, for a device simulator that keeps one core busy per process
    whatever its thread settings (``DeviceStatus.simulated``): unpinned, its helper threads only add system time;
    and for a CPU emulator, whose child is slow and runs LiteRT's kernels on one core.
    The outputs come back in the images' order, the CPU record names each child's core
    (``one_child_per_core``), and the first child to fail fails the run and stops the others. Under a
    :func:`cpu_budget`, one child with that many threads instead. ``on_done`` hears how many images all the children
    have run, as they go."""
    budget = cpu_budget()
    cores = sorted(os.sched_getaffinity(0)) if one_core_each and not budget and hasattr(os, "sched_getaffinity") \
        else []
    shards = min(len(cores), MAX_SHARDS, len(images))
    if shards < 2:
        run = run_isolated(artifact, device, images, emulator, strict, threads=budget, timeout_s=None,
                           on_done=on_done)
        return run.outputs, run.device_note, run.cpu
    with tempfile.TemporaryDirectory(prefix="hubedge-isolated-") as work:
        children = []
        for index, part in enumerate(np.array_split(images, shards)):
            (Path(work) / str(index)).mkdir()
            children.append(_Child(Path(artifact), device, part, Path(work) / str(index), emulator, strict,
                                   None, cores[index]))
        try:
            for child in children:
                child.start()
            runs = _collect_as_they_end(children, on_done)
        except BaseException:  # a failed child, or Ctrl-C: the others' work is void
            _stop_all(children)
            raise
    cpu = {**runs[0].cpu, "one_child_per_core": [list(run.cores) for run in runs]}
    return np.concatenate([run.outputs for run in runs]), runs[0].device_note, cpu


def _collect_as_they_end(children: list[_Child], on_done: OnDone | None = None) -> list[IsolatedRun]:
    """Each child's run, in the children's order, collected as each ends: a failure raises as soon as its child
    has ended, whatever the others are still doing. ``on_done`` hears the images done whenever the count grows."""
    runs: dict[int, IsolatedRun] = {}
    said = 0
    while len(runs) < len(children):
        ended = [i for i, child in enumerate(children) if i not in runs and child.process.poll() is not None]
        for i in ended:
            runs[i] = children[i].collect(None)
        if on_done is not None and (done := sum(child.images_done() for child in children)) > said:
            said = done
            on_done(done)
        if not ended:
            time.sleep(0.05)
    return [runs[i] for i in range(len(children))]


def _stop_all(children: list[_Child]) -> None:
    """Kills every child still running first, then reaps them: a second Ctrl-C while one is reaped leaves no
    other one unkilled."""
    for child in children:
        child.kill()
    for child in children:
        child.reap()


class _Child:
    """One child: its command, log and report files, and how to collect what it gave."""

    def __init__(self, artifact: Path, device: str, images: np.ndarray, work: Path, emulator: Emulator | None,
                 strict: bool, threads: int | None, core: int | None = None) -> None:
        self.artifact, self.device, self.emulator = artifact, device, emulator
        self.paths = {name: work / name for name in ("images.npy", "outputs.npy", "report.json", "log")}
        np.save(self.paths["images.npy"], images)
        self.command = child_command(artifact, device, self.paths["images.npy"], self.paths["outputs.npy"],
                                     self.paths["report.json"], strict, threads, core,
                                     emulator.python if emulator is not None else None)
        self.env = dict(os.environ)
        if emulator is not None:
            self.command = [*emulator.prefix, *self.command]
            self.env.update({**dict(emulator.env), EMULATION_ENV: emulator.description})
        self.process: subprocess.Popen | None = None
        self.log = None

    def start(self) -> None:
        self.log = open(self.paths["log"], "w+", encoding="utf-8", errors="replace")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)

    def images_done(self) -> int:
        """How many images the child says it has run."""
        try:
            return int(progress_path(self.paths["report.json"]).read_text(encoding="ascii") or 0)
        except (OSError, ValueError):
            return 0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def reap(self) -> None:
        if self.process is not None:
            self.process.wait()
        if self.log is not None:
            self.log.close()

    def collect(self, timeout_s: float | None) -> IsolatedRun:
        """Waits for the child (at most ``timeout_s``, None: no limit) and reads what it gave, or raises why not."""
        timed_out = False
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.process.kill()
            self.process.wait()
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().splitlines() if line.strip()]
        self.log.close()
        artifact, device = self.artifact, self.device
        report = _read_report(self.paths["report.json"])
        if timed_out:
            raise RuntimeCrashed(f"the runtime did not finish loading or running {artifact.name} on the {device} in "
                                 f"{timeout_s:.0f} s and was stopped; the artifact is damaged, or this runtime cannot "
                                 "run it")
        if "error" in report:
            raise ERROR_TYPES.get(report["error"], HubedgeError)(report.get("message", "the runtime failed"))
        if self.process.returncode != 0 or "device_note" not in report:
            raise RuntimeCrashed(_crash_message(artifact, device, self.process.returncode, lines))
        cpu = report.get("cpu", {})
        if self.emulator is not None and cpu.get("class") != self.emulator.cpu_class:
            raise EmulationFailed(f"{self.emulator.description} was to run {artifact.name} as a "
                                  f"{self.emulator.cpu_class} CPU, but the runtime saw a "
                                  f"{cpu.get('class', 'unknown')} CPU; the emulated check is void")
        return IsolatedRun(np.load(self.paths["outputs.npy"]), report["device_note"], cpu,
                           tuple(report.get("warnings", ())), tuple(report.get("cores", ())))


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


def progress_path(report: Path) -> Path:
    """Where the child writes how many images it has run: beside its report."""
    return report.with_name("progress")


def _write_progress(report: Path, done: int) -> None:
    temp = report.with_name("progress.tmp")
    temp.write_text(str(done), encoding="ascii")
    os.replace(temp, progress_path(report))  # whole, so that the caller never reads half a number


def _take_number(argv: list[str], flag: str) -> tuple[int | None, list[str]]:
    """The integer after ``flag`` (None without it), and ``argv`` without the two."""
    if flag not in argv:
        return None, argv
    at = argv.index(flag)
    return int(argv[at + 1]), argv[:at] + argv[at + 2:]


def main(argv: list[str]) -> int:
    import warnings

    from hubedge import runtimes

    strict = LENIENT not in argv
    threads, argv = _take_number(argv, THREADS)
    core, argv = _take_number(argv, CORE)
    if core is not None:
        os.sched_setaffinity(0, {core})  # before the runtime starts its threads
    artifact, device, images, outputs, report = [arg for arg in argv if arg != LENIENT]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor = runtimes.load(artifact, device=device, threads=threads, strict=strict)
        np.save(outputs, predict_in_chunks(predictor.predict, np.load(images),
                                           lambda done: _write_progress(Path(report), done)))
        note = predictor.device_status.note if predictor.device_status else ""
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        Path(report).write_text(json.dumps({"device_note": note, "cpu": machine_record(), "cores": cores,
                                            "warnings": [str(w.message) for w in caught]}))
        return 0
    except HubedgeError as error:
        Path(report).write_text(json.dumps({"error": type(error).__name__, "message": str(error)}))
        return 2


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
