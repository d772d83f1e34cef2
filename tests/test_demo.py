"""`make demo` (hubedge/demo.py): a failed export is reported, and the rest is still benched and predicted."""

from __future__ import annotations

import json

from hubedge import demo
from runtimes.manifest import manifest_path


def test_a_failed_export_is_reported_and_the_rest_is_benched_and_predicted(tmp_path):
    models = demo.demo_models(with_bf16=False, emulate=True)
    failing = "efficientnet-lite0.onnx.int8.onnx"
    calls = []
    lines = []

    def fake_cli(argv):
        """Writes a manifest for every artifact an export command plans, except the failing one."""
        calls.append(list(argv))
        if argv[0] != "export":
            return 0
        model = next(m for m in models if m.name == argv[argv.index("--model") + 1])
        command = (argv[argv.index("--format") + 1], argv[argv.index("--quantize") + 1])
        plan = demo.DemoModel(model.name, model.weights, (command,))
        written = [a for a in demo.expected_artifacts(plan, tmp_path) if a.name != failing]
        for artifact in written:
            manifest_path(artifact).write_text(json.dumps({"artifact": artifact.name}))
        return 1 if len(written) < len(demo.expected_artifacts(plan, tmp_path)) else 0

    stale = tmp_path / "efficientnet-lite0.onnx.int8.json"
    stale.write_text("{}")  # left by an earlier run: must not pass for this run's failed export
    code = demo.run(models, tmp_path, fake_cli, lines.append)
    assert code == 1
    bench = next(call for call in calls if call[0] == "bench")
    benched = {arg for arg in bench if arg.endswith(".json") and "bench" not in arg}
    assert len(benched) == 2 * 10 - 1 and str(stale) not in benched
    predicted = [call for call in calls if call[0] == "predict"]
    assert [call[2].rsplit("/", 1)[-1] for call in predicted] == ["bit-m-r50x1-in21k.tflite.int8.tflite",
                                                                   "efficientnet-lite0.tflite.int8.tflite"]
    assert any(failing in line and "benching and predicting with the rest" in line for line in lines)
    assert lines[-1] == "demo: FAILED: 1 export(s) failed"


def test_the_demo_passes_when_every_export_is_written(tmp_path):
    models = demo.demo_models(with_bf16=True, emulate=False)

    def fake_cli(argv):
        if argv[0] == "export":
            model = argv[argv.index("--model") + 1]
            for m in models:
                if m.name == model:
                    for artifact in demo.expected_artifacts(m, tmp_path):
                        manifest_path(artifact).write_text("{}")
        return 0

    lines = []
    assert demo.run(models, tmp_path, fake_cli, lines.append) == 0
    assert lines[-1] == "demo: done: 22 artifacts exported, verified, benched"


def test_the_demo_verifies_as_another_cpu_only_where_an_emulator_runs(monkeypatch):
    """A fresh VNNI machine without qemu-user-static must still pass make demo: native verification, said."""
    from exporter import cpu_emulation
    from runtimes import cpu

    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [cpu.X86_NO_VNNI])
    monkeypatch.setattr(cpu_emulation.shutil, "which", lambda name: None)
    emulate, why_not = demo.emulation_plan()
    assert not emulate and "qemu-user-static" in why_not
    yardstick = demo.demo_models(with_bf16=False, emulate=emulate)[1]
    assert "--verify-cpu" not in yardstick.extra
    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [])  # an AVX2 machine: nothing to emulate
    assert demo.emulation_plan()[0] is False
