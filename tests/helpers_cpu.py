"""Running artifacts as an x86 CPU without VNNI in tests, on whatever machine the tests run."""

from __future__ import annotations

import os

import pytest

from exporter import cpu_emulation
from runtimes import cpu

REQUIRE_ENV = "HUBEDGE_REQUIRE_CPU_EMULATION"  # .ci/run sets it: a missing emulator fails there, never skips


def no_vnni_emulator() -> cpu_emulation.Emulator | None:
    """The emulator that runs a child as ``x86-no-vnni``; None where this machine is that class itself.

    Where it is needed and missing, the test skips, naming what to install, or fails under .ci/run."""
    here = cpu.cpu_class()
    if here == cpu.X86_NO_VNNI:
        return None
    if here != cpu.X86_VNNI:
        pytest.skip(f"this is a {here} machine: x86 CPU classes cannot be run here")
    emulator = cpu_emulation.emulator_for(cpu.X86_NO_VNNI)
    if isinstance(emulator, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {emulator}")
        pytest.skip(emulator)
    return emulator


def emulator_runs_here() -> bool:
    """Whether this machine can run children as ``x86-no-vnni`` through the emulator (never skips)."""
    return cpu.cpu_class() == cpu.X86_VNNI and not isinstance(cpu_emulation.emulator_for(cpu.X86_NO_VNNI), str)
