"""Which kind of CPU this process runs on, as the runtimes see it, and which kinds an artifact is right on.

Why it matters: an int8 artifact's arithmetic differs between CPU kinds. x86 CPUs without VNNI multiply
uint8 by int8 with ``VPMADDUBSW``, which saturates pairs of products at 16 bits, so ONNX Runtime and OpenVINO
int8 can give wrong answers there that a VNNI machine never shows (docs/portable-int8.md). So hubedge names
the CPU class that verified an artifact, and the classes its recipe is meant to be right on.

The features come from CPUID as this process sees it (numpy's dispatcher reads it), not from
``/proc/cpuinfo``: under a user-mode emulator such as ``qemu-x86_64 -cpu EPYC-Rome`` the file still describes
the host, while CPUID, which every runtime's kernel dispatch reads, describes the emulated CPU.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

__all__ = ["ALL_CLASSES", "ARM64", "CPU_CLASSES", "EMULATION_ENV", "OTHER", "X86_NO_VNNI", "X86_VNNI", "classify",
    "cpu_class", "cpu_model", "describe", "features", "machine_record"]

X86_VNNI = "x86-vnni"  # AVX512_VNNI or AVX-VNNI: int8 dot products accumulate in 32 bits
X86_NO_VNNI = "x86-no-vnni"  # AVX2 (or AVX-512 without VNNI): VPMADDUBSW saturates at 16 bits
ARM64 = "arm64"
OTHER = "other"
CPU_CLASSES = (X86_VNNI, X86_NO_VNNI, ARM64, OTHER)
ALL_CLASSES = (X86_VNNI, X86_NO_VNNI, ARM64)  # what a recipe that is right everywhere claims

EMULATION_ENV = "HUBEDGE_EMULATED_CPU"  # set by exporter.cpu_emulation for a child it runs under an emulator

# numpy's names for the features that decide int8 arithmetic, and the names hubedge records
_FEATURE_NAMES = {
    "AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni",
    "AVXVNNI": "avx_vnni", "AVX512_BF16": "avx512_bf16", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd", "NEON": "neon", "ASIMDDP": "asimddp", "ASIMDFHM": "asimdfhm", "SVE": "sve",
}
# /proc/cpuinfo spells these flags as hubedge records them: the fallback when numpy's table is missing


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


@functools.cache
def features() -> tuple[str, ...]:
    """The instruction-set features that decide int8 arithmetic here, sorted (e.g. ``avx2``, ``avx512_vnni``)."""
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
        return ARM64
    return OTHER


def cpu_class() -> str:
    """This process's CPU class: ``x86-vnni``, ``x86-no-vnni``, ``arm64`` or ``other``."""
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
    detail = ", ".join(f for f in record.get("features", []) if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                       "asimd", "asimddp", "sve")) or "no SIMD listed"
    emulated = f"; emulated: {record['emulated']}" if record.get("emulated") else ""
    return f"{record.get('class', '?')} ({detail}{emulated})"
