"""Is a re-authored artifact as fast as the edge twin's? Each pair timed in alternating blocks, in one process.

``hubedge bench`` pairs every row with its own model's TF reference; the edge twin and the published-form twin
are two models with two references, so their p50s are taken minutes apart and this VM drifts by up to 1.6x over
tens of seconds. Here each artifact of a folder is paired directly with the artifact of the same format and
precision in the edge folder (``hubedge.benchmarks.latency.paired_timing``: 6 blocks of 10 calls, each block next to one
of the edge artifact's), so the ratio is steady even when the latencies are not.

    hubedge export --model bit-m-r50x1-in21k --weights seeded --format tflite,onnx,openvino \\
        --quantize none,int8 --output /tmp/rec/edge
    hubedge export ... --twin-form published --graph as-is --output /tmp/rec/published
    hubedge export ... --twin-form published --output /tmp/rec/reauthored     # re-authored (the default)
    .venv/bin/python benchmarks/records/published_graph_pairing.py /tmp/rec/edge /tmp/rec/published \\
        /tmp/rec/reauthored

Run it alone: two cores, nothing else running. The figures are in ``published-graph.md`` beside this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hubedge import runtimes
from hubedge.benchmarks.latency import paired_timing
from hubedge.exporter.pipeline import verification_images

BLOCKS, CALLS, THREADS = 6, 10, 2


def main(edge: Path, *others: Path) -> None:
    one = verification_images(224)[:1]
    print("| artifact | " + " | ".join(f"{o.name} ÷ edge" for o in others) + " |")
    print("| --- |" + " --- |" * len(others))
    for baseline in sorted(edge.glob("*.json")):
        artifact = edge / json.loads(baseline.read_text())["artifact"]["file"]
        base = runtimes.load(artifact, threads=THREADS)
        cells = []
        for folder in others:
            candidate = runtimes.load(folder / artifact.name, threads=THREADS)
            paired = paired_timing(candidate, base, one, BLOCKS, CALLS)
            cells.append(f"{paired.ratio:.3f} ({paired.p50:.1f} / {paired.reference_p50:.1f} ms)")
            del candidate
        print(f"| {artifact.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:]))
