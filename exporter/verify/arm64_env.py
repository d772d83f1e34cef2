"""The aarch64 Python that verifies artifacts as arm64 CPUs on an x86-64 machine, and the one command that makes it.

Why: manifests claim that CPU artifacts are right on arm64, and users run them on phones and ARM boards. hubedge
cannot borrow such a machine, but QEMU's user-mode emulator (``qemu-aarch64-static``, Debian's
``qemu-user-static``) runs an aarch64 Python as any ARM core it models, and the runtimes' own aarch64 wheels then
pick the int8 kernels they would pick on that core. Timings under emulation mean nothing; the arithmetic is real.

What ``prepare()`` builds, offline apart from the package indexes, under :func:`default_root` (``$HUBEDGE_ARM64_ROOT``
overrides it), in a folder named after what it holds so that a changed pin builds anew beside the old one:

- ``sysroot/``: Debian's arm64 packages of the interpreter and the C++ runtime, resolved and downloaded by apt with
  a private state folder (this machine's own package state and sources stay untouched) and unpacked with dpkg-deb;
- ``site/``: PyPI's aarch64 wheels of numpy, Pillow and the runtimes, at the versions installed here, so that
  an arm64 figure differs from an x86 one by the CPU alone;
- ``cpus/<model>/``: one prefix per emulated core for ``qemu-aarch64 -L``: links to the sysroot, and a
  ``proc/cpuinfo`` that describes that core. The runtimes' CPU detection (the cpuinfo library in ONNX Runtime)
  reads ``/proc/cpuinfo``, which under a user-mode emulator describes the x86 host, and ONNX Runtime crashes on it;
  QEMU opens a path under its ``-L`` prefix first, so each core gets a file of its own kind.

The folder is published by one rename after a smoke test has imported every runtime on every core: a folder with
``ready.json`` is complete, and an interrupted preparation leaves only a hidden folder that the next one removes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hubedge
from hubedge.runtimes.cpu import ARM64_DOTPROD, ARM64_NO_DOTPROD
from hubedge.runtimes.errors import HubedgeError

__all__ = ["ARM_MODELS", "Arm64Env", "PREPARE_COMMAND", "QEMU_ARM", "ROOT_ENV", "child_env", "default_root", "find",
           "prepare", "qemu_binary", "wheel_pins"]

ROOT_ENV = "HUBEDGE_ARM64_ROOT"
PREPARE_COMMAND = "make arm64-env"  # what the README names; it calls main() below
QEMU_ARM = ("qemu-aarch64-static", "qemu-aarch64")
# the core QEMU models for each arm64 class: an ARMv8.0 core without dot product (Raspberry Pi 3 class), and QEMU's
# "max", an Armv9 core with dot product, I8MM and SVE2, whose int8 kernels are the newest the runtimes have, without
# SME: under this QEMU (Debian 12's 7.2) LiteRT's SME int8 kernels give wrong outputs (cosine near 0 against the same
# file on x86, while max,sme=off, cortex-a76 and cortex-a53 agree with x86 to 1e-6), an emulator fault that
# verification must not report as the artifact's (docs/arm64.md)
ARM_MODELS = {ARM64_NO_DOTPROD: "cortex-a53", ARM64_DOTPROD: "max,sme=off"}
# Debian packages: the interpreter (apt brings its libraries) and the C++ runtime the wheels link against
DEBIAN_PACKAGES = ("python3", "libstdc++6")
# distributions the verification child imports, pinned to the versions installed here; the runtimes only where
# they are installed here (a runtimes-only install verifies nothing)
BASE_DISTRIBUTIONS = ("numpy", "pillow")
RUNTIME_DISTRIBUTIONS = {"ai-edge-litert": "ai_edge_litert.interpreter", "onnxruntime": "onnxruntime",
                         "openvino": "openvino"}
LAYOUT = 1  # bump when what prepare() builds changes


@dataclasses.dataclass(frozen=True)
class Arm64Env:
    """A prepared environment: its folder, the interpreter, and what it was built from."""

    folder: Path
    python: Path
    record: dict

    def child_env(self) -> dict[str, str]:
        """What the emulated child adds to its environment: the aarch64 wheels first, then hubedge's own code."""
        return child_env(self.folder)

    def prefix(self, model: str) -> Path:
        """The ``qemu-aarch64 -L`` prefix for QEMU CPU ``model``."""
        return self.folder / "cpus" / model


def default_root() -> Path:
    """Where prepared environments live: ``$HUBEDGE_ARM64_ROOT``, else the user's cache folder."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hubedge" / "arm64"


def wheel_pins() -> list[str]:
    """``name==version`` of each distribution the child needs, as installed in this environment."""
    pins = []
    for name in (*BASE_DISTRIBUTIONS, *RUNTIME_DISTRIBUTIONS):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            if name in BASE_DISTRIBUTIONS:
                raise
    return pins


def _key(pins: list[str]) -> str:
    text = json.dumps({"layout": LAYOUT, "pins": pins, "debian": DEBIAN_PACKAGES, "models": ARM_MODELS})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def child_env(folder: Path) -> dict[str, str]:
    return {"PYTHONNOUSERSITE": "1", "PYTHONPATH": os.pathsep.join([str(folder / "site"), str(code_folder(folder))])}


def code_folder(folder: Path) -> Path:
    """A folder that holds only a link to this hubedge package, for the child's path: it imports hubedge from there
    (from a checkout or from site-packages alike) and nothing else of this interpreter's x86-64 site-packages."""
    package = Path(hubedge.__file__).resolve().parent
    code = folder / "code" / hashlib.sha256(str(package).encode()).hexdigest()[:12]
    link = code / "hubedge"
    if not link.is_symlink():
        code.mkdir(parents=True, exist_ok=True)
        made = code / f".hubedge-{os.getpid()}"
        made.unlink(missing_ok=True)
        made.symlink_to(package, target_is_directory=True)
        os.replace(made, link)  # two processes may both make it: the last one's link is the same link
    return code


def qemu_binary() -> str | None:
    return next((found for name in QEMU_ARM if (found := shutil.which(name))), None)


def find(root: Path | None = None) -> Arm64Env | str:
    """The prepared environment for the versions installed here, or why there is none (one line)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"arm64 emulation here needs an x86-64 host; this one is {platform.machine()}"
    if qemu_binary() is None:
        return ("no aarch64 user-mode emulator here: install Debian's qemu-user-static "
                "(apt-get install qemu-user-static)")
    root = root or default_root()
    folder = root / _key(wheel_pins())
    try:
        record = json.loads((folder / "ready.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (f"no aarch64 Python for these runtime versions under {root}: prepare it once with "
                f"`{PREPARE_COMMAND}` (Debian's arm64 packages and PyPI's aarch64 wheels, about 300 MB)")
    return Arm64Env(folder, folder / record["python"], record)


def prepare(root: Path | None = None, say: Callable[[str], None] = print) -> Arm64Env:
    """Builds (or finds) the environment for the versions installed here. Raises HubedgeError, in one line, when
    a step fails; nothing half-built is left under a name :func:`find` reads."""
    found = find(root)
    if isinstance(found, Arm64Env):
        say(f"arm64-env: ready at {found.folder} (cached)")
        return found
    if qemu_binary() is None or platform.machine().lower() not in ("x86_64", "amd64"):
        raise HubedgeError(f"arm64-env: {found}")
    root = root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".building-*"):
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    pins = wheel_pins()
    folder = root / _key(pins)
    building = root / f".building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        say("arm64-env: Debian arm64 packages (apt, private state) ...")
        _debian_sysroot(building)
        python = _interpreter(building / "sysroot")
        version = python.name.removeprefix("python")
        say(f"arm64-env: PyPI aarch64 wheels for Python {version}: {', '.join(pins)} ...")
        _wheels(building / "site", pins, version)
        cpus = {}
        for model in ARM_MODELS.values():
            cpus[model] = _core_prefix(building, python, model)
        say(f"arm64-env: smoke test: importing the runtimes on {', '.join(ARM_MODELS.values())} ...")
        for model in ARM_MODELS.values():
            _smoke_test(building, python, model)
        record = {"layout": LAYOUT, "pins": pins, "debian": list(DEBIAN_PACKAGES), "python": str(
            python.relative_to(building)), "cpus": cpus}
        (building / "ready.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    for old in root.iterdir():  # environments of other versions: each is about 300 MB
        if old.is_dir() and old != folder and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    say(f"arm64-env: ready at {folder}")
    return Arm64Env(folder, folder / record["python"], record)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()
                 and not line.startswith("WARNING: Location")]
        raise HubedgeError(f"arm64-env: {what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done.stdout


def _debian_sysroot(building: Path) -> None:
    """apt resolves the interpreter's dependencies as if on an empty arm64 system, and only downloads them."""
    apt = building / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True)
    (apt / "status").write_text("")
    options = ["-q", "-o", f"Dir::State={apt / 'state'}", "-o", f"Dir::State::status={apt / 'status'}",
               "-o", f"Dir::Cache={apt / 'cache'}", "-o", "APT::Architecture=arm64",
               "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1"]
    _run(["apt-get", *options, "update"], "apt-get update (arm64 package lists)")
    _run(["apt-get", *options, "-y", "--no-install-recommends", "install", "--download-only", *DEBIAN_PACKAGES],
         f"apt-get download of {', '.join(DEBIAN_PACKAGES)} for arm64")
    sysroot = building / "sysroot"
    sysroot.mkdir()
    for deb in sorted((apt / "cache" / "archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")
    shutil.rmtree(apt)


def _interpreter(sysroot: Path) -> Path:
    found = sorted(p for p in (sysroot / "usr" / "bin").glob("python3.*") if p.name[len("python3."):].isdigit())
    if not found:
        raise HubedgeError("arm64-env: Debian's python3 package brought no python3.X interpreter")
    return found[-1]


def _wheels(site: Path, pins: list[str], version: str) -> None:
    """pip installs the aarch64 wheels into a folder, without running anything of them here."""
    glibc = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(17, 40)]
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site),
          "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
          "--platform=manylinux2014_aarch64", *glibc, *pins], "pip install of the aarch64 wheels")


def _emulated(building: Path, python: Path, model: str, code: str, prefix: Path) -> str:
    env = {"PATH": os.environ.get("PATH", ""), **child_env(building)}
    return _run([qemu_binary(), "-cpu", model, "-L", str(prefix), str(python), "-c", code],
                f"running the aarch64 Python as {model}", env)


def _core_prefix(building: Path, python: Path, model: str) -> dict:
    """``cpus/<model>``: links to the sysroot's top folders and a /proc/cpuinfo of this core's kind."""
    prefix = building / "cpus" / model
    prefix.mkdir(parents=True)
    for entry in (building / "sysroot").iterdir():
        (prefix / entry.name).symlink_to(Path("..", "..", "sysroot", entry.name))
    code = "from hubedge.runtimes.cpu import features; print(' '.join(features()))"
    features = _emulated(building, python, model, code, building / "sysroot").split()
    implementer, part = _MIDR.get(model, ("0x00", "0x051"))
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(['fp', *features])}\nCPU implementer\t: {implementer}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n")
    (prefix / "proc").mkdir()
    (prefix / "proc" / "cpuinfo").write_text("".join(f"processor\t: {n}\n{block}" for n in range(os.cpu_count() or 1)))
    return {"features": features, "midr_part": part}


def _smoke_test(building: Path, python: Path, model: str) -> None:
    modules = [module for name, module in RUNTIME_DISTRIBUTIONS.items() if any(p.startswith(f"{name}==")
                                                                             for p in wheel_pins())]
    _emulated(building, python, model, "import numpy, PIL; " + "; ".join(f"import {m}" for m in modules),
              building / "cpus" / model)


# MIDR fields of the real cores (Arm's implementer 0x41); QEMU's max core has an implementer and part of its own
_MIDR = {"cortex-a53": ("0x41", "0xd03"), "cortex-a72": ("0x41", "0xd08"), "cortex-a76": ("0x41", "0xd0b")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make arm64-env", description=(
        "Prepare (once; cached) the aarch64 Python that --verify-cpu all runs arm64 verification in, under "
        "qemu-aarch64: Debian's arm64 packages and PyPI's aarch64 wheels of the runtimes installed here."))
    parser.add_argument("--root", type=Path, default=None, help=f"where to keep it (default: ${ROOT_ENV}, else "
                                                                "~/.cache/hubedge/arm64)")
    args = parser.parse_args(argv)
    try:
        prepare(args.root)
    except HubedgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("arm64-env: interrupted; nothing half-built was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
