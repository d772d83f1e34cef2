"""Which kind of CPU this process runs on, as the runtimes see it, and which kinds an artifact is right on.

Why it matters: an int8 artifact's arithmetic differs between CPU kinds. x86 CPUs without VNNI multiply
uint8 by int8 with ``VPMADDUBSW``, which saturates pairs of products at 16 bits, so ONNX Runtime and OpenVINO
int8 can give wrong answers there that a VNNI machine never shows (docs/portable-int8.md). On arm64 the split is
the dot-product instructions (ARMv8.2's SDOT/UDOT, and I8MM's SMMLA beside them): without them (ARMv8.0 cores
such as the Cortex-A53 and A72 of Raspberry Pi 3 and 4 boards) XNNPACK, ONNX Runtime and OpenVINO run other
int8 kernels, and OpenVINO cannot compile some int8 graphs at all (docs/arm64.md). So hubedge names the CPU
class that verified an artifact, and the classes its recipe is meant to be right on.

The features come from CPUID as this process sees it (numpy's dispatcher reads it), and on arm64 from the
kernel's hardware capabilities (the auxiliary vector), not from ``/proc/cpuinfo``: under a user-mode emulator
such as ``qemu-x86_64 -cpu EPYC-Rome`` the file still describes the host, while CPUID and the auxiliary vector,
which every runtime's kernel dispatch reads, describe the emulated CPU.
"""

from __future__ import annotations

import functools
import os
import platform
import struct
from typing import Any

__all__ = ["ALL_CLASSES", "ARM64", "ARM64_CLASSES", "ARM64_DOTPROD", "ARM64_NO_DOTPROD", "CPU_CLASSES", "EMULATION_ENV",
    "OTHER", "X86_NO_VNNI", "X86_VNNI", "classify", "covers", "cpu_class", "cpu_model", "describe", "features",
    "machine_record"]

X86_VNNI = "x86-vnni"  # AVX512_VNNI or AVX-VNNI: int8 dot products accumulate in 32 bits
X86_NO_VNNI = "x86-no-vnni"  # AVX2 (or AVX-512 without VNNI): VPMADDUBSW saturates at 16 bits
ARM64_DOTPROD = "arm64-dotprod"  # ARMv8.2+ with SDOT/UDOT (Cortex-A55, A76 and later; I8MM on the newest)
ARM64_NO_DOTPROD = "arm64-no-dotprod"  # ARMv8.0/8.1 without them (Cortex-A53, A57, A72)
ARM64_CLASSES = (ARM64_DOTPROD, ARM64_NO_DOTPROD)
ARM64 = "arm64"  # manifests before the split name every arm64 CPU so: covers() reads it as both classes
OTHER = "other"
CPU_CLASSES = (X86_VNNI, X86_NO_VNNI, *ARM64_CLASSES, OTHER)
ALL_CLASSES = (X86_VNNI, X86_NO_VNNI, *ARM64_CLASSES)  # what a recipe that is right everywhere claims

EMULATION_ENV = "HUBEDGE_EMULATED_CPU"  # set by exporter.verify.cpu_emulation for a child it runs under an emulator

# numpy's names for the features that decide int8 arithmetic, and the names hubedge records
_FEATURE_NAMES = {
    "AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni",
    "AVXVNNI": "avx_vnni", "AVX512_BF16": "avx512_bf16", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd", "NEON": "neon", "ASIMDDP": "asimddp", "ASIMDFHM": "asimdfhm", "SVE": "sve",
}
# /proc/cpuinfo spells these flags as hubedge records them: the fallback when numpy's table is missing
# arm64: the Linux kernel's HWCAP and HWCAP2 bits (asm/hwcap.h) of the features that decide int8 and fp16 kernels,
# named as /proc/cpuinfo names them
_ARM_HWCAP = {1: "asimd", 10: "asimdhp", 20: "asimddp", 22: "sve", 23: "asimdfhm"}
_ARM_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}
_AT_HWCAP, _AT_HWCAP2 = 16, 26


def _numpy_features() -> dict[str, bool] | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy 2: CPUID as this process sees it
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # numpy 1
        except ImportError:
            return None
    return dict(__cpu_features__)


def _proc_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _arm_hwcaps() -> set[str] | None:
    """The arm64 features the kernel (or a user-mode emulator) hands this process, None where it cannot be read."""
    try:
        with open("/proc/self/auxv", "rb") as auxv:
            vector = dict(struct.iter_unpack("<QQ", auxv.read()))
    except (OSError, struct.error):
        return None
    caps, caps2 = vector.get(_AT_HWCAP, 0), vector.get(_AT_HWCAP2, 0)
    return ({name for bit, name in _ARM_HWCAP.items() if caps >> bit & 1}
            | {name for bit, name in _ARM_HWCAP2.items() if caps2 >> bit & 1})


@functools.cache
def features() -> tuple[str, ...]:
    """The instruction-set features that decide int8 arithmetic here, sorted (e.g. ``avx2``, ``avx512_vnni``;
    ``asimddp``, ``i8mm``)."""
    if platform.machine().lower() in ("aarch64", "arm64") and (caps := _arm_hwcaps()) is not None:
        return tuple(sorted(caps))
    found = _numpy_features()
    if found is not None:
        named = {_FEATURE_NAMES[k] for k, on in found.items() if on and k in _FEATURE_NAMES}
        if not os.environ.get(EMULATION_ENV):  # numpy's table has no AVX-VNNI (Alder Lake and later): the kernel's
            named |= _proc_flags() & {"avx_vnni"}  # flags do, and they describe this CPU unless it is emulated
        return tuple(sorted(named))
    return tuple(sorted(_proc_flags() & set(_FEATURE_NAMES.values())))


def classify(arch: str, feature_set: tuple[str, ...] | set[str] | list[str]) -> str:
    """The CPU class of a machine with ``arch`` (platform.machine()) and these features."""
    arch = arch.lower()
    if arch in ("x86_64", "amd64", "i686", "x86"):
        return X86_VNNI if {"avx512_vnni", "avx_vnni"} & set(feature_set) else X86_NO_VNNI
    if arch in ("aarch64", "arm64"):
        return ARM64_DOTPROD if "asimddp" in set(feature_set) else ARM64_NO_DOTPROD
    return OTHER


def covers(right_on: list[str] | tuple[str, ...], cpu: str) -> bool:
    """Whether a manifest's ``right_on`` names CPU class ``cpu`` (its older ``arm64`` names both arm64 classes)."""
    return cpu in right_on or (cpu in ARM64_CLASSES and ARM64 in right_on)


def cpu_class() -> str:
    """This process's CPU class: ``x86-vnni``, ``x86-no-vnni``, ``arm64-dotprod``, ``arm64-no-dotprod`` or
    ``other``."""
    return classify(platform.machine(), features())


def cpu_model() -> str:
    """The CPU model name in /proc/cpuinfo (the host's, under a user-mode emulator)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        return ""


def machine_record() -> dict[str, Any]:
    """What a manifest or a bench report records of the CPU a figure was measured on."""
    emulated = os.environ.get(EMULATION_ENV, "")
    record: dict[str, Any] = {"class": cpu_class(), "features": list(features()), "arch": platform.machine(),
                              "model": cpu_model(), "emulated": emulated or False}
    if emulated:  # /proc/cpuinfo names the host under a user-mode emulator
        record["model"] = f"{emulated} (emulated on {record['model'] or 'an unnamed host'})"
    return record


def describe(record: dict[str, Any]) -> str:
    """One phrase for a machine record: ``x86-no-vnni (avx2, fma; emulated: qemu EPYC-Rome)``."""
    shown = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "i8mm", "sve")
    detail = ", ".join(f for f in record.get("features", []) if f in shown) or "no SIMD listed"
    emulated = f"; emulated: {record['emulated']}" if record.get("emulated") else ""
    return f"{record.get('class', '?')} ({detail}{emulated})"
