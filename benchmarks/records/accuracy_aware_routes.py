"""Accuracy-aware int8 of the trained-weights yardstick (EfficientNet-Lite0) on every CPU route: does a target met
on the tuning split hold on the 132 verification images, natively and as an x86 CPU without VNNI?

Each route is one ``hubedge export --quantize int8 --accuracy-target …`` (plain int8, the search of the fewest
layers kept float on the tuning split, the chosen file verified natively and, where qemu-user-static runs here, as
``x86-no-vnni``). The per-commit suite runs the TFLite route (tests/test_export_accuracy_aware.py); the search on
every format is tested on tiny twins (tests/test_accuracy_aware.py). Reproduce (about 5 minutes on 2 cores):

    .venv/bin/python benchmarks/records/accuracy_aware_routes.py

It prints one markdown row per route; the figures are in ``accuracy-aware-int8.md`` beside this file.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from hubedge.cli import main as hubedge
from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.exporter.sources import build_twin, catalog
from hubedge.exporter.verify.cpu_emulation import emulator_for
from hubedge.runtimes import cpu

# (format, target), as measured when the targets were set (accuracy-aware-int8.md)
ROUTES = [("tflite", "cosine_min=0.985"), ("onnx", "sqnr_db=22"), ("openvino", "cosine_min=0.98")]
SLACK = {"cosine_min": 0.002, "sqnr_db": 0.5}  # sampling error between the tuning split and the 132 images


def within_slack(target: AccuracyTarget, figures: dict) -> bool:
    return not AccuracyTarget(tuple((name, limit - SLACK[name]) for name, limit in target.limits)).missed(figures)


def route(model: Path, fmt: str, spec: str, out: Path, emulate: bool) -> str:
    """One route's markdown row (or why it failed)."""
    args = ["export", "--model", str(model), "--format", fmt, "--quantize", "int8", "--accuracy-target", spec,
            "--output", str(out), *(["--verify-cpu", cpu.X86_NO_VNNI] if emulate else [])]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = hubedge(args)
    if code != 0:
        return f"| {fmt} | {spec} | export failed: {err.getvalue().strip().splitlines()[-1][:200]} |"
    manifest = json.loads((out / f"efficientnet-lite0.{fmt}.int8-accuracy.json").read_text())
    verification, search = manifest["verification"], manifest["quantization"]["accuracy_aware"]
    target = AccuracyTarget.parse(spec)
    name = target.limits[0][0]
    other = verification.get("cpu_classes", {}).get(cpu.X86_NO_VNNI)
    return (f"| {fmt} | {spec} | {len(search['float_layers'])} (limit {search['float_layer_limit']}) | "
            f"{search['tuning_figures'][name]:.4f} | {verification[name]:.4f} | "
            f"{f'{other[name]:.4f}' if other else 'not run'} | {verification['top1_margin']:.3f} | "
            f"{'yes' if within_slack(target, verification) else 'NO'} |")


def main() -> int:
    emulate = cpu.cpu_class() != cpu.X86_NO_VNNI and not isinstance(emulator_for(cpu.X86_NO_VNNI), str)
    print(f"CPU class {cpu.cpu_class()}; x86-no-vnni {'emulated' if emulate else 'native or not run'}")
    print("| format | target | float layers | tuning split | 132 images | x86-no-vnni (44 photos) | top1_margin | "
          "held within slack |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        model = build_twin(catalog.get("efficientnet-lite0"), "package", Path(work) / "model").savedmodel_dir
        for fmt, spec in ROUTES:
            out = Path(work) / fmt
            print(route(model, fmt, spec, out, emulate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
