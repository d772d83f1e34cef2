"""Running an artifact's runtime as another CPU class than this machine's, without a second machine.

How, for x86: QEMU's user-mode emulator (Debian's ``qemu-user-static``) runs the verification child with a CPU model
whose CPUID stops at AVX2 (``EPYC-Rome``: AVX2 and FMA, no AVX-512, no VNNI). Every runtime then dispatches
the kernels it would pick on such a CPU, and the emulator carries out their instructions with the same
results, ``VPMADDUBSW``'s 16-bit saturation included. It is far slower than the CPU (verification runs it on
the photos without their crops) but its numerics are the real ones: EfficientNet-Lite0's ONNX int8 gave
cosine_min 0.7212 under it, the same figure a real AVX2-only EPYC gave (docs/portable-int8.md).

Only the way down is possible: QEMU's emulator has no AVX-512, so a machine without VNNI cannot run as one with it.

How, for arm64: ``qemu-aarch64-static`` runs an aarch64 Python with the runtimes' aarch64 wheels
(``hubedge.exporter.verify.arm64_env``, prepared once by ``make arm64-env``) as a Cortex-A53 (``arm64-no-dotprod``) or
as QEMU's ``max`` core with dot product and I8MM (``arm64-dotprod``). Timings under emulation mean nothing and are never
reported.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil

from hubedge.exporter.verify import arm64_env
from hubedge.runtimes.cpu import ARM64_CLASSES, X86_NO_VNNI, X86_VNNI, cpu_class
from hubedge.runtimes.errors import UnsupportedError

__all__ = ["Emulator", "INSTALL_HINT", "QEMU_MODELS", "QEMU_X86", "classes_to_verify", "emulator_for",
           "other_classes"]

QEMU_X86 = ("qemu-x86_64-static", "qemu-x86_64")
QEMU_MODELS = {X86_NO_VNNI: "EPYC-Rome"}  # an AVX2-only x86 (Zen 2), as the CPU the problem was found on
INSTALL_HINT = "install Debian's qemu-user-static (apt-get install qemu-user-static)"


@dataclasses.dataclass(frozen=True)
class Emulator:
    """A command prefix that runs a program as a CPU of ``cpu_class``."""

    cpu_class: str
    prefix: tuple[str, ...]
    description: str
    python: str | None = None  # the interpreter the child runs under the emulator (None: this one)
    env: tuple[tuple[str, str], ...] = ()  # added to the child's environment


def emulator_for(target: str) -> Emulator | str:
    """An emulator that runs programs as a ``target``-class CPU here, or the reason there is none."""
    if target in ARM64_CLASSES:
        env = arm64_env.find()
        if isinstance(env, str):
            return env
        model = arm64_env.ARM_MODELS[target]
        return Emulator(target, (arm64_env.qemu_binary(), "-cpu", model, "-L", str(env.prefix(model))),
                        f"qemu-aarch64 {model}", str(env.python), tuple(env.child_env().items()))
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"emulating {target} needs an x86-64 host; this one is {platform.machine()}"
    if target not in QEMU_MODELS:
        return (f"no emulator can run as {target}: QEMU's user-mode x86 emulator has no AVX-512, so it can only "
                f"emulate {', '.join(QEMU_MODELS)}")
    binary = next((found for name in QEMU_X86 if (found := shutil.which(name))), None)
    if binary is None:
        return f"no x86-64 user-mode emulator here: {INSTALL_HINT}"
    model = QEMU_MODELS[target]
    return Emulator(target, (binary, "-cpu", model), f"qemu {model}")


def other_classes() -> list[str]:
    """The CPU classes this machine could be verified as besides its own (x86 with VNNI: the class without; any
    x86-64: both arm64 classes)."""
    x86 = [X86_NO_VNNI] if cpu_class() == X86_VNNI else []
    return x86 + (list(ARM64_CLASSES) if platform.machine().lower() in ("x86_64", "amd64") else [])


def classes_to_verify(verify_cpu: str) -> list[str]:
    """The CPU classes ``--verify-cpu`` asks for besides this one: none (``native``), every class this machine could
    be emulated as (``all``), or the classes of a comma list (``x86-no-vnni,arm64-no-dotprod``)."""
    if verify_cpu == "native":
        return []
    if verify_cpu == "all":
        return other_classes()
    asked = [name.strip() for name in verify_cpu.split(",") if name.strip()]
    possible = other_classes()
    wrong = [name for name in asked if name not in possible]
    if wrong or not asked:
        raise UnsupportedError(f"--verify-cpu takes native, all, or a comma list of the CPU classes this machine can "
                               f"be emulated as ({', '.join(possible) or 'none here'}); got {verify_cpu!r}")
    return asked
