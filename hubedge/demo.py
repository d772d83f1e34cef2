"""``make demo``: export two models to every CPU format and precision, bench what was exported, predict a photo.

Why a module and not a Makefile recipe: a failed export must not stop the demo. It exports what it can, says
what failed, benches and predicts with what it has, and exits non-zero only if something that should work did
not. bf16 is not attempted where the CPU has no bf16 arithmetic (it would be refused): the demo says so and that
is no failure.

Run as ``python -m hubedge.demo [--output artifacts]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.formats import FORMATS
from runtimes.manifest import manifest_path

PHOTOS = ("calibration_data/skimage-chelsea-cat.jpg", "calibration_data/skimage-coffee.jpg")


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """One model of the demo and the export commands it gets (format list, precisions)."""

    name: str
    weights: str
    exports: tuple[tuple[str, str], ...]
    extra: tuple[str, ...] = ()  # more export arguments (the yardstick is also verified as other CPU classes)
    photos: tuple[str, ...] = PHOTOS[:1]


def demo_models(with_bf16: bool, emulate: bool) -> list[DemoModel]:
    """The demo's plan; ``emulate``: also verify the yardstick as an x86 CPU without VNNI."""
    exports = (("tflite", "none,fp16,dynamic,int8"), ("onnx,openvino", "none,fp16,int8"))
    if with_bf16:
        exports += (("openvino", "bf16"),)
    return [
        DemoModel("bit-m-r50x1-in21k", "seeded", exports),
        DemoModel("efficientnet-lite0", "package", exports, extra=("--verify-cpu", "all") if emulate else (),
                  photos=PHOTOS),
    ]


def emulation_plan() -> tuple[bool, str]:
    """Whether the yardstick can also be verified as another CPU class here, and what to say if not."""
    from exporter.cpu_emulation import emulator_for, other_classes
    from runtimes.cpu import cpu_class

    others = other_classes()
    if not others:
        return False, f"demo: this CPU is {cpu_class()}; no other CPU class can be emulated on it"
    missing = [reason for reason in map(emulator_for, others) if isinstance(reason, str)]
    if missing:
        return False, f"demo: the yardstick is verified on this CPU class only: {missing[0]}"
    return True, ""


def expected_artifacts(model: DemoModel, output: Path) -> list[Path]:
    """Every artifact the model's export commands should write, by the formats table's naming."""
    from exporter.formats import parse_precisions

    return [output / FORMATS[name].artifact_name(model.name, precision)
            for formats, precisions in model.exports for name in formats.split(",")
            for precision in parse_precisions(precisions)]


def run(models: list[DemoModel], output: Path, cli: Callable[[Sequence[str]], int], say=print) -> int:
    """Exports, benches and predicts; returns 0 only when every planned export was written and verified."""
    planned = {model.name: expected_artifacts(model, output) for model in models}
    for artifacts in planned.values():  # a manifest left by an earlier run must not pass for this run's artifact
        for artifact in artifacts:
            manifest_path(artifact).unlink(missing_ok=True)
    for model in models:
        for formats, precisions in model.exports:
            cli(["export", "--model", model.name, "--weights", model.weights, "--output", str(output),
                 "--format", formats, "--quantize", precisions, *model.extra])
    written = {name: [a for a in artifacts if manifest_path(a).is_file()] for name, artifacts in planned.items()}
    missing = [a.name for name, artifacts in planned.items() for a in artifacts if a not in written[name]]
    if missing:
        say(f"demo: {len(missing)} export(s) failed (the lines above say why): {', '.join(missing)}; "
            "benching and predicting with the rest")
    manifests = [str(manifest_path(a)) for artifacts in written.values() for a in artifacts]
    problems = [f"{len(missing)} export(s) failed"] if missing else []
    if manifests:
        if cli(["bench", *manifests, "--threads", "2", "--json", str(output / "bench.json"),
                "--markdown", str(output / "bench.md"), "--plot", str(output / "bench.png")]) != 0:
            problems.append("the bench failed")
    for model in models:
        tflite_int8 = output / FORMATS["tflite"].artifact_name(model.name, "int8")
        if tflite_int8 in written[model.name]:
            if cli(["predict", "--model", str(tflite_int8), *model.photos]) != 0:
                problems.append(f"predict with {tflite_int8.name} failed")
        else:
            say(f"demo: no {tflite_int8.name} to predict with (its export failed)")
    if problems:
        say(f"demo: FAILED: {'; '.join(problems)}")
        return 1
    say(f"demo: done: {len(manifests)} artifacts exported, verified, benched")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubedge.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="artifacts", help="output folder (default: artifacts/)")
    args = parser.parse_args(argv)
    import openvino as ov

    from hubedge.cli import main as cli
    from hubedge.cli.common import say
    from runtimes.openvino_runtime import cpu_has_bf16

    with_bf16 = cpu_has_bf16(ov.Core())
    if not with_bf16:
        say("demo: this CPU has no bf16 arithmetic (AVX512_BF16 or AMX): OpenVINO bf16 is not exported here")
    emulate, why_not = emulation_plan()
    if why_not:
        say(why_not)
    return run(demo_models(with_bf16, emulate), Path(args.output), cli, say)


if __name__ == "__main__":
    sys.exit(main())
