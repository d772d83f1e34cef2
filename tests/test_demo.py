"""`make demo` (hubedge/demo.py): a failed export is reported, and the rest is still benched and predicted."""

from __future__ import annotations

import json

from hubedge.exporter.formats import FORMATS
from hubedge.exporter.zoo.fanout import RunSummary
from hubedge import demo
from hubedge.runtimes.manifest import manifest_path


def _fake_run(tmp_path, failing: str = "", up_to_date: int = 0):
    """A catalog run that writes a manifest for every job but ``failing``, the first ``up_to_date`` of them
    reported as skipped; what the demo does with a run's outcome is under test, the run itself in test_zoo.py."""
    seen = []

    def export_jobs(jobs, output):
        seen.append(jobs)
        summary = RunSummary(keys={job: f"key-{index}" for index, job in enumerate(jobs)})
        for index, job in enumerate(jobs):
            artifact = output / FORMATS[job.format].artifact_name(job.model, job.precision)
            if artifact.name == failing:
                summary.failed[f"key-{index}"] = "verification failed"
                continue
            manifest_path(artifact).write_text(json.dumps({"artifact": artifact.name}))
            (summary.skipped if index < up_to_date else summary.done).append(f"key-{index}")
        return summary

    return export_jobs, seen


def test_a_failed_export_is_reported_and_the_rest_is_benched_predicted_and_reported(tmp_path):
    models = demo.demo_models(with_bf16=False, verify_cpu="x86-no-vnni,arm64-no-dotprod")
    failing = "efficientnet-lite0.onnx.int8.onnx"
    stale = tmp_path / "efficientnet-lite0.onnx.int8.json"
    stale.write_text("{}")  # left by an earlier run: must not pass for this run's failed export
    calls, lines = [], []
    export_jobs, seen = _fake_run(tmp_path, failing)

    def fake_cli(argv):
        calls.append(list(argv))
        return 0

    assert demo.run(models, tmp_path, fake_cli, lines.append, export_jobs) == 1
    assert len(seen) == 1 and len(seen[0]) == 2 * 10  # both models in one catalog run
    yardstick_jobs = [job for job in seen[0] if job.model == "efficientnet-lite0"]
    assert all(job.options.verify_cpu == "x86-no-vnni,arm64-no-dotprod" and job.weights == "package"
               for job in yardstick_jobs)
    assert [call[0] for call in calls] == ["bench", "predict", "predict"]
    benched = {arg for arg in calls[0] if arg.endswith(".json") and "bench" not in arg}
    assert len(benched) == 2 * 10 - 1 and str(stale) not in benched
    assert [call[2].rsplit("/", 1)[-1] for call in calls[1:]] == ["bit-m-r50x1-in21k.tflite.int8.tflite",
                                                                   "efficientnet-lite0.tflite.int8.tflite"]
    assert any("efficientnet-lite0 onnx int8" in line and "benching and predicting with the rest" in line
               for line in lines)
    assert (tmp_path / "hubedge-report.md").is_file()  # the catalog report ends the demo
    assert lines[-1] == "demo: FAILED: 1 export(s) failed"


def test_the_demo_passes_when_every_export_is_written_and_says_how_many_were_up_to_date(tmp_path):
    models = demo.demo_models(with_bf16=True)
    export_jobs, seen = _fake_run(tmp_path, up_to_date=5)
    lines = []
    assert demo.run(models, tmp_path, lambda argv: 0, lines.append, export_jobs) == 0
    assert all(job.options.verify_cpu == "native" for job in seen[0])
    assert lines[-1] == ("demo: done: 22 artifacts exported (5 of them up to date from an earlier run), verified, "
                         "benched")


def test_the_demo_verifies_as_another_cpu_only_where_an_emulator_runs(monkeypatch, tmp_path):
    """A fresh VNNI machine without qemu-user-static must still pass make demo: native verification, said; and
    one without the aarch64 Python verifies as the other x86 class and says what arm64 lacks."""
    from hubedge.exporter.verify import arm64_env, cpu_emulation
    from hubedge.runtimes import cpu

    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [cpu.X86_NO_VNNI, *cpu.ARM64_CLASSES])
    monkeypatch.setenv(arm64_env.ROOT_ENV, str(tmp_path))  # nothing prepared there
    if not isinstance(cpu_emulation.emulator_for(cpu.X86_NO_VNNI), str):
        verify_cpu, why_not = demo.emulation_plan()
        assert verify_cpu == cpu.X86_NO_VNNI and "make arm64-env" in why_not
        assert all(name in why_not for name in cpu.ARM64_CLASSES)
    monkeypatch.setattr(cpu_emulation.shutil, "which", lambda name: None)
    monkeypatch.setattr(arm64_env.shutil, "which", lambda name: None)
    verify_cpu, why_not = demo.emulation_plan()
    assert verify_cpu == "native" and "qemu-user-static" in why_not
    yardstick = demo.demo_models(with_bf16=False, verify_cpu=verify_cpu)[1]
    assert yardstick.options.verify_cpu == "native"
    monkeypatch.setattr(cpu_emulation, "other_classes", lambda: [])  # nothing to emulate
    assert demo.emulation_plan()[0] == "native"
