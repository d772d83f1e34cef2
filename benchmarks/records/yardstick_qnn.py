"""The trained-weights yardstick (EfficientNet-Lite0) to ``qnn`` int8, verified on the QNN HTP simulator: does the
NPU recipe keep what a real model computes?

One ``hubedge export --format qnn --quantize int8`` of the yardstick, verified on the 132 images on the HTP
simulator (one pinned child per core). The per-commit suite exports qnn int8 on tiny twins (the route, the HTP
verification and the int8 fallback: tests/test_export_formats.py, tests/test_int8_fallback.py); the yardstick's
other formats and precisions stay per commit (tests/test_export_efficientnet_lite.py). This agreement figure on
trained weights is a benchmark: it took 84 s of a CI worker's time, the most of any single step. Reproduce (about
2.5 minutes on 2 cores, nothing else running):

    .venv/bin/python benchmarks/records/yardstick_qnn.py

It prints the figures as a markdown row and exits 1 if any misses what the per-commit test held it to before;
the figures are in ``htp-simulator-verification.md`` beside this file.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from hubedge.cli import main as hubedge
from hubedge.exporter.formats import YARDSTICK_TOP_K
from hubedge.exporter.sources import build_twin, catalog
from hubedge.runtimes import cpu

# what tests/test_export_efficientnet_lite.py held every quantized yardstick artifact to, qnn's included
FLOORS = {"top1": 0.85, "cosine_min": 0.94, "top1_margin": 0.97}
EVALUATION_IMAGES = 132


def main() -> int:
    print(f"CPU class {cpu.cpu_class()}")
    with tempfile.TemporaryDirectory() as work:
        model = build_twin(catalog.get("efficientnet-lite0"), "package", Path(work) / "model").savedmodel_dir
        out = Path(work) / "qnn"
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = hubedge(["export", "--model", str(model), "--format", "qnn", "--quantize", "int8",
                            "--output", str(out)])
        seconds = time.monotonic() - started
        if code != 0:
            print(f"export failed (exit {code}): {err.getvalue().strip().splitlines()[-1][:300]}")
            return 1
        manifest = json.loads((out / "efficientnet-lite0.qnn.int8.json").read_text())
    verification = manifest["verification"]
    top1, top5, margin = YARDSTICK_TOP_K["int8"]
    missed = [f"{name} {verification[name]:.4f} < {floor}" for name, floor in FLOORS.items()
              if verification[name] < floor]
    if not verification["passed"] or verification["images"] != EVALUATION_IMAGES:
        missed.append(f"verification passed={verification['passed']} on {verification['images']} images")
    print("| device | images | cosine_min | top1 | top5 | top1_margin | int8 target (top1/top5/margin) | "
          "export and verification | held |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {verification['device']} | {verification['images']} | {verification['cosine_min']:.4f} | "
          f"{verification['top1']:.3f} | {verification['top5']:.3f} | {verification['top1_margin']:.3f} | "
          f"{top1}/{top5}/{margin} | {seconds:.0f} s | {'yes' if not missed else 'NO: ' + '; '.join(missed)} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
