"""arm64 verification: a tiny twin's int8 artifacts run by the runtimes' aarch64 wheels under qemu-aarch64, as an
ARMv8.0 core without dot product and as one with dot product and I8MM (exporter.verify.arm64_env,
exporter.verify.cpu_emulation).

.ci/run prepares the aarch64 Python (`make arm64-env`) and sets HUBEDGE_REQUIRE_CPU_EMULATION=1, so these never
skip there; elsewhere they skip, naming the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from exporter.verify import arm64_env, cpu_emulation
from exporter.options import ExportOptions
from runtimes import cpu
from runtimes.errors import UnsupportedError
from runtimes.isolated import EmulationFailed, run_isolated
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
