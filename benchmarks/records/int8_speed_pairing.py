"""How much faster is int8 than its own fp32 on this machine's CPU class? Each pair timed in one process.

Issue #13 item 5 asks for int8 at least 1.5x its own fp32 on every runtime on an x86 CPU without VNNI (AVX2),
and still 2x with VNNI. ``hubedge bench`` pairs every row with the TF reference, so int8 and fp32 are compared
there only through two ratios. Here each int8 artifact is paired directly with the fp32 artifact of its format
(``hubedge.benchmarks.latency.paired_timing``: 6 blocks of 10 calls, alternating). For ONNX it also pairs the int8
artifact as the adapter runs it on this CPU class with the same file run with ONNX Runtime's default session,
which shows what the exact uint8 x uint8 path costs where the adapter sets it (``x86-no-vnni``).

    make demo      # or: hubedge export --model bit-m-r50x1-in21k --weights seeded --format tflite,onnx,openvino \\
                   #         --quantize none,int8 --output artifacts
    .venv/bin/python benchmarks/records/int8_speed_pairing.py artifacts

Run it alone: two cores, nothing else running. The figures are in ``portable-int8.md`` beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hubedge.runtimes.onnx_runtime  # noqa: F401 (runtimes.onnx_runtime below)
from hubedge import runtimes
from hubedge.benchmarks.latency import paired_timing
from hubedge.exporter.pipeline import verification_images
from hubedge.runtimes.cpu import cpu_class

BLOCKS, CALLS, THREADS = 6, 10, 2
SUFFIXES = {"tflite": "tflite", "onnx": "onnx", "openvino": "xml"}


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    found = []
    for fp32 in sorted(folder.glob("*.fp32.*")):
        model, fmt = fp32.name.split(".")[:2]
        int8 = folder / f"{model}.{fmt}.int8.{SUFFIXES.get(fmt, '')}"
        if fmt in SUFFIXES and fp32.suffix == f".{SUFFIXES[fmt]}" and int8.is_file():
            found.append((fp32, int8))
    return found


def _default_onnx_session(artifact: Path) -> runtimes.Predictor:
    """The int8 file run with ONNX Runtime's default session options, whatever this CPU class is."""
    chosen = runtimes.onnx_runtime.cpu_session_config
    runtimes.onnx_runtime.cpu_session_config = dict
    try:
        return runtimes.load(artifact, threads=THREADS)
    finally:
        runtimes.onnx_runtime.cpu_session_config = chosen


def main(*folders: Path) -> None:
    print(f"CPU class: {cpu_class()}; {THREADS} threads, {BLOCKS} blocks of {CALLS} calls")
    print("| int8 artifact | int8 / fp32 | fp32 ÷ int8 |")
    print("| --- | --- | --- |")
    for folder in folders:
        for fp32_path, int8_path in _pairs(folder):
            one = verification_images(runtimes.model_info(runtimes.read_manifest(int8_path)).input_size)[:1]
            fp32, int8 = runtimes.load(fp32_path, threads=THREADS), runtimes.load(int8_path, threads=THREADS)
            paired = paired_timing(int8, fp32, one, BLOCKS, CALLS)
            print(f"| {int8_path.name} | {paired.ratio:.3f} ({paired.p50:.1f} / {paired.reference_p50:.1f} ms) "
                  f"| {1 / paired.ratio:.2f} |", flush=True)
            if int8_path.suffix == ".onnx":
                default = _default_onnx_session(int8_path)
                fix = paired_timing(int8, default, one, BLOCKS, CALLS)
                print(f"| {int8_path.name}, as the adapter runs it ÷ ONNX Runtime's default session | "
                      f"{fix.ratio:.3f} ({fix.p50:.1f} / {fix.reference_p50:.1f} ms) | |", flush=True)
                del default
            del fp32, int8


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:]))
