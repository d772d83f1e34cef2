"""CPU classes: what the runtimes see, what manifests and bench reports record, what load() does off-class."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hubedge import runtimes
from hubedge.exporter.verify import cpu_emulation
from hubedge.runtimes import isolated
from hubedge.cli import main
from hubedge.runtimes import cpu
from tests.helpers import no_vnni_emulator


@pytest.mark.parametrize("arch, features, expected", [
    ("x86_64", ("avx2", "fma"), cpu.X86_NO_VNNI),
    ("x86_64", ("avx2", "avx512f", "avx512bw"), cpu.X86_NO_VNNI),  # Skylake-SP: AVX-512 without VNNI saturates
    ("x86_64", ("avx2", "avx512f", "avx512_vnni"), cpu.X86_VNNI),
    ("x86_64", ("avx2", "avx_vnni"), cpu.X86_VNNI),  # Alder Lake: VEX-encoded VNNI
    ("aarch64", ("asimd", "asimddp"), cpu.ARM64_DOTPROD),  # ARMv8.2+: SDOT/UDOT
    ("aarch64", ("asimd", "asimddp", "i8mm", "sve2"), cpu.ARM64_DOTPROD),
    ("aarch64", ("asimd",), cpu.ARM64_NO_DOTPROD),  # Cortex-A53/A72: ARMv8.0
    ("riscv64", (), cpu.OTHER),
])
def test_cpu_classes_follow_the_features_that_decide_int8_arithmetic(arch, features, expected):
    assert cpu.classify(arch, features) == expected


def test_this_machine_is_recorded_with_its_class_and_features():
    record = cpu.machine_record()
    assert record["class"] == cpu.cpu_class() and record["features"] == list(cpu.features())
    assert record["emulated"] is False and cpu.describe(record).startswith(record["class"])


def _manifest_for(path, right_on):
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["cpu_classes"] = {"right_on": right_on}
    path.with_suffix(".json").write_text(json.dumps(manifest))


def test_an_artifact_off_its_cpu_classes_warns_once_and_strict_refuses(tiny_exports, tmp_path, monkeypatch):
    import shutil

    source = tiny_exports[("tflite", "int8")].artifact
    artifact = tmp_path / source.name
    shutil.copy(source, artifact)
    shutil.copy(source.with_suffix(".json"), artifact.with_suffix(".json"))
    here = cpu.cpu_class()
    elsewhere = cpu.X86_VNNI if here != cpu.X86_VNNI else cpu.X86_NO_VNNI
    _manifest_for(artifact, [elsewhere])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtimes.load(artifact)
        runtimes.load(artifact)
    messages = [str(w.message) for w in caught if "recipe is right only on" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0] and f"right only on {elsewhere}" in messages[0]
    with pytest.raises(runtimes.DeviceUnavailableError, match="refused: --strict-device"):
        runtimes.load(artifact, strict=True)
    code = main(["predict", "--model", str(artifact), "--strict-device", "calibration_data/skimage-coffee.jpg"])
    assert code == 2
    _manifest_for(artifact, [here])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtimes.load(artifact, strict=True)


def test_onnx_runtime_takes_the_exact_int8_kernels_only_where_the_fast_ones_saturate(monkeypatch):
    from hubedge.runtimes import onnx_runtime

    monkeypatch.setattr(cpu, "cpu_class", lambda: cpu.X86_NO_VNNI)
    assert onnx_runtime.cpu_session_config() == {"session.x64quantprecision": "1"}
    monkeypatch.setenv(onnx_runtime.PRECISE_INT8_ENV, "0")
    assert onnx_runtime.cpu_session_config() == {}
    monkeypatch.delenv(onnx_runtime.PRECISE_INT8_ENV)
    monkeypatch.setattr(cpu, "cpu_class", lambda: cpu.X86_VNNI)  # exact already, and the option costs time there
    assert onnx_runtime.cpu_session_config() == {}


def test_an_emulator_that_does_not_change_the_cpu_class_voids_the_check(tiny_exports):
    """A child that sees this machine's own class where another was promised is refused, not counted."""
    other = cpu.X86_NO_VNNI if cpu.cpu_class() != cpu.X86_NO_VNNI else cpu.X86_VNNI
    fake = cpu_emulation.Emulator(other, (), "no emulator at all")
    images = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(isolated.EmulationFailed, match="the emulated check is void"):
        isolated.predict_isolated(tiny_exports[("onnx", "int8")].artifact, "cpu", images, fake)


def test_the_emulator_runs_the_runtimes_as_an_x86_cpu_without_vnni(tiny_exports):
    emulator = no_vnni_emulator()
    if emulator is None:
        pytest.skip("this machine is an x86 CPU without VNNI itself: nothing to emulate")
    images = np.zeros((1, 64, 64, 3), np.float32)
    _, _, seen = isolated.predict_isolated(tiny_exports[("onnx", "int8")].artifact, "cpu", images, emulator)
    assert seen["class"] == cpu.X86_NO_VNNI and "avx2" in seen["features"] and "avx512f" not in seen["features"]
    assert seen["emulated"] == "qemu EPYC-Rome"


# slow (about a minute): three tiny exports, each also verified under QEMU, which runs float slowly
def test_float_artifacts_of_each_cpu_runtime_are_verified_as_an_x86_cpu_without_vnni(tiny_classifier, tmp_path):
    """The emulated check of float artifacts, one per CPU runtime and float precision (the trained yardstick
    verifies its float artifacts natively only: test_export_efficientnet_lite.py)."""
    from hubedge.exporter.options import ExportOptions
    from tests.helpers import LazyExports

    emulated = no_vnni_emulator() is not None  # None: this machine is that class itself, verified natively
    pairs = [("tflite", "fp16"), ("onnx", "fp32"), ("openvino", "fp16")]
    options = ExportOptions(verify_cpu=cpu.X86_NO_VNNI if emulated else "native")
    exports = LazyExports(tiny_classifier, tmp_path, pairs, options)
    for pair in pairs:
        verification = exports[pair].verification
        run = verification["cpu_classes"][cpu.X86_NO_VNNI]
        assert run["passed"] and bool(run["emulated"]) == emulated and run["cpu"]["class"] == cpu.X86_NO_VNNI, pair
        figures = run if emulated else verification
        assert figures["images"] == (11 if emulated else 132) and figures["cosine_min"] > 0.999, (pair, figures)


def test_int8_cpu_vnni_is_refused_before_any_work_where_no_format_has_such_a_recipe(capsys):
    code = main(["export", "--model", "no/such/model", "--format", "onnx,tflite", "--quantize", "int8",
                 "--int8-cpu", "vnni"])
    err = capsys.readouterr().err
    assert code == 2 and "--int8-cpu vnni applies to openvino int8 exports only" in err and "loading" not in err


def test_a_bench_report_tells_cpu_classes_apart():
    from hubedge.benchmarks.runner import machine_info

    machine = machine_info(2)
    assert machine["cpu_class"] == cpu.cpu_class() and machine["cpu_features"] == list(cpu.features())
    assert machine["os"] and machine["threads"] == 2 and "onnxruntime" in machine["versions"]


def test_verify_cpu_all_refuses_a_missing_emulator_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [cpu.X86_NO_VNNI])
    monkeypatch.setattr(cpu_emulation.shutil, "which", lambda name: None)
    code = main(["export", "--model", "no/such/model", "--format", "onnx", "--quantize", "int8",
                 "--verify-cpu", "all"])
    err = capsys.readouterr().err
    assert code == 2 and "qemu-user-static" in err and "loading" not in err and len(err.strip().splitlines()) == 1


def test_int8_cpu_vnni_is_refused_before_any_work_on_a_cpu_it_is_not_right_on(monkeypatch, capsys):
    monkeypatch.setattr(cpu, "cpu_class", lambda: cpu.X86_NO_VNNI)
    code = main(["export", "--model", "no/such/model", "--format", "openvino", "--quantize", "int8",
                 "--int8-cpu", "vnni"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be verified here" in err and "loading" not in err


def test_avx_vnni_counts_although_numpy_does_not_list_it(monkeypatch):
    """numpy's CPUID table has no AVX-VNNI; an Alder Lake (AVX-VNNI, no AVX-512) is still a VNNI CPU."""
    monkeypatch.setattr(cpu, "_numpy_features", lambda: {"AVX2": True, "FMA3": True, "AVX512F": False})
    monkeypatch.setattr(cpu, "_proc_flags", lambda: {"avx2", "fma", "avx_vnni"})
    monkeypatch.delenv(cpu.EMULATION_ENV, raising=False)
    cpu.features.cache_clear()
    try:
        assert "avx_vnni" in cpu.features() and cpu.classify("x86_64", cpu.features()) == cpu.X86_VNNI
        monkeypatch.setenv(cpu.EMULATION_ENV, "qemu EPYC-Rome")  # there /proc/cpuinfo is the host's
        cpu.features.cache_clear()
        assert "avx_vnni" not in cpu.features()
    finally:
        cpu.features.cache_clear()


def test_openvino_int8_claims_armv8_0_only_where_verified_there(tiny_exports):
    """OpenVINO's ARM plugin cannot run some int8 convolutions without dot product (docs/arm64.md): verified on
    this CPU alone, the manifest leaves that class out of right_on and says why."""
    manifest = json.loads(tiny_exports[("openvino", "int8")].artifact.with_suffix(".json").read_text())
    classes = manifest["cpu_classes"]
    assert cpu.ARM64_NO_DOTPROD not in classes["right_on"] and cpu.ARM64_DOTPROD in classes["right_on"]
    assert "dot product" in classes["not_on"][cpu.ARM64_NO_DOTPROD] and "unproven" not in classes


def test_a_class_whose_runtime_cannot_compile_the_artifact_leaves_right_on_with_the_reason():
    from hubedge.exporter.pipeline import _settle_cpu_classes

    classes = {"right_on": list(cpu.ALL_CLASSES), "unproven": {cpu.ARM64_NO_DOTPROD: "why"}}
    reason = "not supported: OpenVINO compiled x but cannot run it on this CPU (arm64-no-dotprod): object is ..."
    _settle_cpu_classes(classes, {"cpu_classes": {cpu.X86_VNNI: {}}, "cpu_classes_unsupported":
                                  {cpu.ARM64_NO_DOTPROD: reason}})
    assert classes == {"right_on": [cpu.X86_VNNI, cpu.X86_NO_VNNI, cpu.ARM64_DOTPROD],
                       "not_on": {cpu.ARM64_NO_DOTPROD: reason}}
    verified = {"right_on": list(cpu.ALL_CLASSES), "unproven": {cpu.ARM64_NO_DOTPROD: "why"}}
    _settle_cpu_classes(verified, {"cpu_classes": {cpu.X86_VNNI: {}, cpu.ARM64_NO_DOTPROD: {"passed": True}}})
    assert verified == {"right_on": list(cpu.ALL_CLASSES)}


def test_manifests_that_name_arm64_cover_both_arm64_classes():
    assert cpu.covers(["x86-vnni", "arm64"], cpu.ARM64_NO_DOTPROD) and cpu.covers(["arm64"], cpu.ARM64_DOTPROD)
    assert not cpu.covers(["x86-vnni", "arm64"], cpu.X86_NO_VNNI)
    assert not cpu.covers([cpu.ARM64_DOTPROD], cpu.ARM64_NO_DOTPROD)
