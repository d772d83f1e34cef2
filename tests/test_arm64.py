"""arm64 verification: a tiny twin's int8 artifacts run by the runtimes' aarch64 wheels under qemu-aarch64, as an
ARMv8.0 core without dot product and as one with dot product and I8MM (hubedge.exporter.verify.arm64_env,
hubedge.exporter.verify.cpu_emulation).

.ci/run prepares the aarch64 Python (`make arm64-env`) and sets HUBEDGE_REQUIRE_CPU_EMULATION=1, so these never
skip there; elsewhere they skip, naming the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hubedge.exporter.verify import arm64_env, cpu_emulation
from hubedge.exporter.options import ExportOptions
from hubedge.runtimes import cpu
from hubedge.runtimes.errors import UnsupportedError
from hubedge.runtimes.isolated import EmulationFailed, run_isolated
from tests.helpers import LazyExports, arm64_emulator

BOTH = f"{cpu.ARM64_DOTPROD},{cpu.ARM64_NO_DOTPROD}"


@pytest.fixture(scope="module")
def arm64_exports(tiny_classifier, tmp_path_factory) -> LazyExports:
    for name in cpu.ARM64_CLASSES:
        arm64_emulator(name)  # skips (or fails under .ci/run) before any export when the environment is missing
    return LazyExports(tiny_classifier, tmp_path_factory.mktemp("arm64"),
                       [("tflite", "int8"), ("onnx", "int8")], ExportOptions(verify_cpu=BOTH))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_artifacts_are_verified_on_both_arm64_classes_by_aarch64_runtimes(arm64_exports, fmt):
    result = arm64_exports[(fmt, "int8")]
    manifest = json.loads(result.artifact.with_suffix(".json").read_text())
    classes = manifest["verification"]["cpu_classes"]
    for name, model in arm64_env.ARM_MODELS.items():
        run = classes[name]
        # the child said so itself: an aarch64 machine, with the features of the core it was started as
        assert run["passed"] and run["cpu"]["arch"] == "aarch64" and run["cpu"]["class"] == name, run
        assert run["emulated"] == f"qemu-aarch64 {model}" and run["images"] == 44
        assert 0.9 <= run["cosine_min"] <= 1.0
        assert name in manifest["cpu_classes"]["right_on"]
    assert "asimddp" in classes[cpu.ARM64_DOTPROD]["cpu"]["features"]
    assert "i8mm" in classes[cpu.ARM64_DOTPROD]["cpu"]["features"]
    assert "sme" not in classes[cpu.ARM64_DOTPROD]["cpu"]["features"]  # emulated SME kernels are wrong: see arm64_env
    assert "asimddp" not in classes[cpu.ARM64_NO_DOTPROD]["cpu"]["features"]
    # the other x86 class was not asked for, and the manifest says so instead of claiming it
    assert all("not checked" in why for why in manifest["verification"]["cpu_classes_unchecked"].values())


def test_a_child_that_is_not_the_core_it_was_started_as_is_refused(arm64_exports):
    """The control: an emulator named for the dot-product class that runs an ARMv8.0 core must fail the check,
    so a passing arm64 row cannot come from the wrong core (or from x86)."""
    artifact = arm64_exports[("tflite", "int8")].artifact
    right = arm64_emulator(cpu.ARM64_NO_DOTPROD)
    wrong = cpu_emulation.Emulator(cpu.ARM64_DOTPROD, right.prefix, "a Cortex-A53 posing as arm64-dotprod",
                                   right.python, right.env)
    images = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(EmulationFailed, match="saw a arm64-no-dotprod CPU"):
        run_isolated(artifact, "cpu", images, wrong)
    assert run_isolated(artifact, "cpu", images, right).cpu["arch"] == "aarch64"


def test_verify_cpu_takes_only_classes_this_machine_can_be_emulated_as(monkeypatch):
    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [cpu.X86_NO_VNNI, *cpu.ARM64_CLASSES])
    assert cpu_emulation.classes_to_verify(BOTH) == list(cpu.ARM64_CLASSES)
    assert cpu_emulation.classes_to_verify("all") == [cpu.X86_NO_VNNI, *cpu.ARM64_CLASSES]
    assert cpu_emulation.classes_to_verify("native") == []
    with pytest.raises(UnsupportedError, match="x86-vnni"):
        cpu_emulation.classes_to_verify(cpu.X86_VNNI)  # this machine's own class is not emulated
    with pytest.raises(UnsupportedError):
        ExportOptions(verify_cpu="arm64")  # the class of older manifests names no one core


def test_an_unprepared_environment_names_the_command_that_prepares_it(monkeypatch, tmp_path):
    monkeypatch.setenv(arm64_env.ROOT_ENV, str(tmp_path))
    reason = cpu_emulation.emulator_for(cpu.ARM64_DOTPROD)
    assert isinstance(reason, str) and arm64_env.PREPARE_COMMAND in reason and "\n" not in reason


def test_the_child_imports_hubedge_through_a_link_from_anywhere(tmp_path):
    """The emulated child's path holds a link to this hubedge package and nothing else of this interpreter's
    site-packages; from a folder outside the checkout, with no install on the path, it imports the libraries."""
    path = arm64_env.child_env(tmp_path / "env")["PYTHONPATH"].split(os.pathsep)
    assert path[0] == str(tmp_path / "env" / "site") and sorted(p.name for p in Path(path[1]).iterdir()) == ["hubedge"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # no site processing, so no editable install: hubedge comes from the link, numpy from its folder (as the child
    # takes it from the aarch64 wheels)
    code = ("import sys; sys.path[:0] = sys.argv[1:]; import hubedge.runtimes.cpu, hubedge.runtimes.isolated; "
            "print(hubedge.runtimes.isolated.__file__)")
    found = subprocess.run([sys.executable, "-I", "-S", "-c", code, path[1], str(Path(np.__file__).parents[1])],
                           capture_output=True, text=True, cwd=elsewhere, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()) == Path(arm64_env.__file__).parents[2] / "runtimes" / "isolated.py"
    assert arm64_env.child_env(tmp_path / "env") == arm64_env.child_env(tmp_path / "env")  # made once, then reused
