"""``make demo``: export two models to every CPU format and precision in one catalog run, bench what was exported,
predict a photo, and end with the catalog report.

Why a module and not a Makefile recipe: a failed export must not stop the demo. Its exports are the jobs of one
catalog run on a local Ray instance (``hubedge.exporter.zoo``), so a failed job is recorded and the others go on, and a
second ``make demo`` skips every export that is up to date. It then benches and predicts with what it has, writes
the catalog report (``hubedge report``), and exits non-zero only if something that should work did not. bf16 is not
attempted where the CPU has no bf16 arithmetic (it would be refused): the demo says so and that is no failure.

Run as ``python -m hubedge.demo [--output artifacts]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hubedge.exporter.formats import FORMATS
from hubedge.exporter.options import ExportOptions
from hubedge.runtimes.manifest import manifest_path

PHOTOS = ("calibration_data/skimage-chelsea-cat.jpg", "calibration_data/skimage-coffee.jpg")


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """One model of the demo and what it is exported to: (format list, precisions) pairs, and the options."""

    name: str
    weights: str
    exports: tuple[tuple[str, str], ...]
    options: ExportOptions = ExportOptions()  # the yardstick is also verified as other CPU classes
    photos: tuple[str, ...] = PHOTOS[:1]


def demo_models(with_bf16: bool, verify_cpu: str = "native") -> list[DemoModel]:
    """The demo's plan; ``verify_cpu``: the CPU classes the yardstick is also verified as (``emulation_plan``)."""
    exports = (("tflite", "none,fp16,dynamic,int8"), ("onnx,openvino", "none,fp16,int8"))
    if with_bf16:
        exports += (("openvino", "bf16"),)
    return [
        DemoModel("bit-m-r50x1-in21k", "seeded", exports),
        DemoModel("efficientnet-lite0", "package", exports,
                  options=ExportOptions(verify_cpu=verify_cpu), photos=PHOTOS),
    ]


def demo_jobs(models: list[DemoModel]) -> list:
    """Every (model, format, precision) job of the demo, each with the options its format takes."""
    from hubedge.exporter.api import planned_pairs
    from hubedge.exporter.zoo import plan_jobs

    return [job for model in models for formats, precisions in model.exports
            for job in plan_jobs([model.name], model.weights, "edge",
                                 planned_pairs(formats, precisions, lambda _: None), model.options)]


def emulation_plan() -> tuple[str, str]:
    """The yardstick's ``verify_cpu``: every other CPU class whose emulator is ready here (``native`` if none), and
    what to say of the classes left out."""
    from hubedge.exporter.verify.cpu_emulation import emulator_for, other_classes
    from hubedge.runtimes.cpu import cpu_class

    others = other_classes()
    if not others:
        return "native", f"demo: this CPU is {cpu_class()}; no other CPU class can be emulated on it"
    ready = [other for other in others if not isinstance(emulator_for(other), str)]
    missing = [f"{other}: {emulator_for(other)}" for other in others if other not in ready]
    why_not = f"demo: the yardstick is not verified as {'; '.join(missing)}" if missing else ""
    return ",".join(ready) or "native", why_not


def exported(jobs: list, summary, output: Path) -> tuple[list[Path], list[str]]:
    """The artifacts this run's jobs wrote or found up to date, and the labels of the jobs that failed: the run's
    summary decides, so a manifest left by some other run never passes for this run's artifact."""
    good = set(summary.done) | set(summary.skipped)
    written, missing = [], []
    for job in jobs:
        artifact = output / FORMATS[job.format].artifact_name(job.model, job.precision)
        if summary.keys.get(job) in good and manifest_path(artifact).is_file():
            written.append(artifact)
        else:
            missing.append(job.label)
    return written, missing


def run(models: list[DemoModel], output: Path, cli: Callable[[Sequence[str]], int], say=print,
        export_jobs: Callable | None = None) -> int:
    """Exports (one catalog run), benches, predicts and reports; returns 0 only when every planned export was
    written and verified. ``export_jobs(jobs, output)`` returns the run's summary (default: on a local Ray)."""
    from hubedge.benchmarks import catalog_report

    if export_jobs is None:
        from hubedge.exporter.zoo.fanout import run_jobs

        def export_jobs(jobs, folder):
            return run_jobs(jobs, folder, progress=say)

    jobs = demo_jobs(models)
    say(f"demo: {len(models)} models, {len(jobs)} export jobs in one catalog run on a local Ray instance")
    summary = export_jobs(jobs, output)
    say(f"demo: exports: {summary.line()}")
    written, missing = exported(jobs, summary, output)
    if missing:
        say(f"demo: {len(missing)} export(s) failed (the lines above say why): {', '.join(missing)}; "
            "benching and predicting with the rest")
    manifests = [str(manifest_path(artifact)) for artifact in written]
    problems = [f"{len(missing)} export(s) failed"] if missing else []
    if manifests:
        if cli(["bench", *manifests, "--threads", "2", "--json", str(output / "bench.json"),
                "--markdown", str(output / "bench.md"), "--plot", str(output / "bench.png")]) != 0:
            problems.append("the bench failed")
    for model in models:
        tflite_int8 = output / FORMATS["tflite"].artifact_name(model.name, "int8")
        if tflite_int8 in written:
            if cli(["predict", "--model", str(tflite_int8), *model.photos]) != 0:
                problems.append(f"predict with {tflite_int8.name} failed")
        else:
            say(f"demo: no {tflite_int8.name} to predict with (its export failed)")
    catalog_report.write(output, say)
    if problems:
        say(f"demo: FAILED: {'; '.join(problems)}")
        return 1
    say(f"demo: done: {len(manifests)} artifacts exported ({len(summary.skipped)} of them up to date from an "
        "earlier run), verified, benched")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubedge.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="artifacts", help="output folder (default: artifacts/)")
    args = parser.parse_args(argv)
    import openvino as ov

    from hubedge.cli import main as cli
    from hubedge.cli.common import say
    from hubedge.runtimes.openvino_runtime import cpu_has_bf16

    with_bf16 = cpu_has_bf16(ov.Core())
    if not with_bf16:
        say("demo: this CPU has no bf16 arithmetic (AVX512_BF16 or AMX): OpenVINO bf16 is not exported here")
    verify_cpu, why_not = emulation_plan()
    if why_not:
        say(why_not)
    return run(demo_models(with_bf16, verify_cpu), Path(args.output), cli, say)


if __name__ == "__main__":
    sys.exit(main())
