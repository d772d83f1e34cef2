"""The BiT graph writers against the converters on a full-size seeded twin: op counts, outputs, time, memory.

    python benchmarks/records/bit_writer_equivalence.py bit-m-r50x1-in21k          # every step, each in a process
    python benchmarks/records/bit_writer_equivalence.py bit-m-r50x1-in21k onnx direct   # one step (what the above runs)

Each step runs in a process of its own, so that its peak RSS is its own: the fp32 ONNX file (tf2onnx in its child,
or written from the weights) and the fp32 OpenVINO model (``ov.convert_model``, or built from the weights), then
both on 4 bundled photos. The summary compares op type counts and outputs (max |difference| over max |output|).
Printed as the Markdown rows of benchmarks/records/bit-writer.md.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = [("onnx", "converter"), ("onnx", "direct"), ("openvino", "converter"), ("openvino", "direct")]


def step(model: str, fmt: str, writer: str, folder: Path) -> dict:
    from hubedge import calibration_data
    from hubedge.exporter.formats import onnx as onnx_format
    from hubedge.exporter.formats import openvino as openvino_format
    from hubedge.exporter.graph.reauthor import choose_graph
    from hubedge.exporter.options import ExportOptions, Workspace
    from hubedge.exporter.sources import load_model
    from hubedge.runtimes.memory import PeakMemory, current_rss_bytes
    from hubedge.runtimes.preprocess import preprocess

    loaded = choose_graph(load_model(model, "seeded"))
    size = loaded.info.input_size
    images = preprocess(calibration_data.held_apart_photos()[:4], size)
    before = current_rss_bytes()
    start = time.perf_counter()
    with PeakMemory() as peak:  # making the fp32 file or model, and nothing else
        if fmt == "onnx":
            made = onnx_format.convert_fp32(loaded, Workspace.for_model(size, ExportOptions(), folder), folder,
                                            graph_writer=writer)
            method, child = made.method, made.converter_peak
        else:
            built, method = openvino_format.fp32_model(loaded, size, -1, writer)
            child = 0
    seconds = time.perf_counter() - start
    with PeakMemory() as running:  # then running it
        if fmt == "onnx":
            import onnx
            import onnxruntime as ort

            graph = onnx.load(str(made.path), load_external_data=False).graph
            ops = collections.Counter(node.op_type for node in graph.node)
            session = ort.InferenceSession(str(made.path), providers=["CPUExecutionProvider"])
            outputs = np.concatenate([session.run(None, {session.get_inputs()[0].name: image[None]})[0]
                                      for image in images])
        else:
            import openvino as ov

            ops = collections.Counter(op.get_type_name() for op in built.get_ordered_ops())
            compiled = ov.compile_model(built, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            outputs = np.concatenate([compiled(image[None])[0] for image in images])
    np.save(folder / f"{fmt}-{writer}.npy", outputs)
    return {"format": fmt, "writer": writer, "seconds": round(seconds, 1), "method": method,
            "process_peak_gb": round(peak.bytes / 1e9, 2), "process_before_gb": round(before / 1e9, 2),
            "running_peak_gb": round(running.bytes / 1e9, 2),
            "child_peak_gb": round(child / 1e9, 2), "ops": dict(sorted(ops.items()))}


def main() -> None:
    model = sys.argv[1]
    if len(sys.argv) == 5:
        print(json.dumps(step(model, sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
        return
    folder = Path(tempfile.mkdtemp(prefix="bit-writer-"))
    rows = {}
    for fmt, writer in STEPS:
        done = subprocess.run([sys.executable, __file__, model, fmt, writer, str(folder)], capture_output=True,
                              text=True, check=True)
        rows[fmt, writer] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| {model} | format | route | time | RSS before / making it / then running it | converter child peak | "
          "op types and counts | outputs vs converter |")
    for fmt in ("onnx", "openvino"):
        base = np.load(folder / f"{fmt}-converter.npy")
        for writer in ("converter", "direct"):
            row = rows[fmt, writer]
            ours = np.load(folder / f"{fmt}-{writer}.npy")
            same = "same" if row["ops"] == rows[fmt, "converter"]["ops"] else f"DIFFERENT: {row['ops']}"
            diff = float(np.abs(ours - base).max() / np.abs(base).max())
            print(f"| | {fmt} | {writer} | {row['seconds']} s | {row['process_before_gb']} / "
                  f"{row['process_peak_gb']} / {row['running_peak_gb']} GB | {row['child_peak_gb'] or '-'} GB | "
                  f"{sum(row['ops'].values())} ops, {same} | {diff:.1e} |")
    print(json.dumps({f"{fmt} {writer}": row for (fmt, writer), row in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
