"""Running an artifact's runtime as another CPU class than this machine's, without a second machine.

How: QEMU's user-mode emulator (Debian's ``qemu-user-static``) runs the verification child with a CPU model
whose CPUID stops at AVX2 (``EPYC-Rome``: AVX2 and FMA, no AVX-512, no VNNI). Every runtime then dispatches
the kernels it would pick on such a CPU, and the emulator carries out their instructions with the same
results, ``VPMADDUBSW``'s 16-bit saturation included. It is far slower than the CPU (verification runs it on
the photos without their crops) but its numerics are the real ones: EfficientNet-Lite0's ONNX int8 gave
cosine_min 0.7212 under it, the same figure a real AVX2-only EPYC gave (docs/portable-int8.md).

Only the way down is possible: QEMU's emulator has no AVX-512, so a machine without VNNI cannot run as one with it.
Timings under emulation mean nothing and are never reported.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil

from runtimes.cpu import ARM64, X86_NO_VNNI, X86_VNNI, cpu_class

__all__ = ["Emulator", "INSTALL_HINT", "QEMU_MODELS", "QEMU_X86", "emulator_for", "other_classes"]

QEMU_X86 = ("qemu-x86_64-static", "qemu-x86_64")
QEMU_MODELS = {X86_NO_VNNI: "EPYC-Rome"}  # an AVX2-only x86 (Zen 2), as the CPU the problem was found on
INSTALL_HINT = "install Debian's qemu-user-static (apt-get install qemu-user-static)"


@dataclasses.dataclass(frozen=True)
class Emulator:
    """A command prefix that runs a program as a CPU of ``cpu_class``."""

    cpu_class: str
    prefix: tuple[str, ...]
    description: str


def emulator_for(target: str) -> Emulator | str:
    """An emulator that runs programs as a ``target``-class CPU here, or the reason there is none."""
    if target == ARM64:
        return ("not emulated: it would take an aarch64 Python with aarch64 runtime wheels under qemu-aarch64; "
                "verify on an ARM machine")
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
    """The CPU classes this machine could be verified as besides its own (x86 with VNNI: the class without)."""
    return [X86_NO_VNNI] if cpu_class() == X86_VNNI else []
