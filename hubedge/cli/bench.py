"""``hubedge bench``: the flags, parsed into ``hubedge.benchmarks.bench`` and, with ``--baseline``, the regression
gate."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hubedge.cli.common import (add_image_limit_argument, count, fraction, import_tensorflow_quietly, int_list,
                                positive_int, probability, say)
from hubedge.runtimes.errors import HubedgeError


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="latency and agreement with the FP32 reference, per artifact and device")
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT_OR_DIR", help="artifacts, or folders of them")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "npu", "all"),
                        help="device(s) to run on; absent ones are reported as not available (default: cpu)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="evaluation images (default: the held-apart bundled photos, never calibration ones)")
    parser.add_argument("--batch", type=int_list, default=(1,), help="batch sizes for throughput (default: 1)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every runtime, recorded in the report (default: all cores of the machine "
                             "that times)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="time on the nodes of this Ray cluster that offer each device (default: $RAY_ADDRESS, "
                             "else here); nodes offer devices with ray start --resources \"$(hubedge devices "
                             "--ray-resources)\", and must see the artifacts at the same paths")
    parser.add_argument("--runs", type=positive_int, default=20, help="timed calls per row (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    parser.add_argument("--paired-blocks", type=count, default=6, metavar="N",
                        help="time each artifact in N blocks alternating with its TF reference and give `× ref` "
                        "from them, steady when the machine's speed drifts (default: 6; 0: from separate p50s)")
    parser.add_argument("--reference-mode", choices=("auto", "tf", "recorded"), default="auto",
                        help="tf: rebuild and time each model's TF reference; recorded: agreement against the "
                             "outputs recorded at export, latency against a reference artifact, no TensorFlow "
                             "needed; auto (default): tf where TensorFlow is installed")
    parser.add_argument("--reference", metavar="ARTIFACT", default=None,
                        help="recorded mode: the artifact every row's latency is paired with (default: the model's "
                             "fp32 artifact of the same format)")
    parser.add_argument("--vendor-check", action="store_true", help="also time each CPU artifact with its "
                        "runtime's own timer (benchmark_app, litert-benchmark) and show the gap")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown table")
    parser.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="draw latency against agreement, Pareto front marked "
                        "(needs matplotlib: hubedge[plot])")
    parser.add_argument("--save-baseline", metavar="FILE", help="save this run as a baseline for later runs")
    parser.add_argument("--baseline", metavar="FILE", help="compare with a saved run; regressions exit non-zero")
    parser.add_argument("--max-slowdown", type=fraction, default=0.10,
                        help="allowed growth of a row's latency relative to its TF reference (default: 10%%); a "
                             "row past it fails only if the slowdown is also significant, and after one re-timing")
    parser.add_argument("--significance", type=probability, default=0.01, metavar="P",
                        help="p-value below which a slowdown counts (one-sided Mann-Whitney U test of the per-block "
                             "ratios against the baseline's; default: 0.01)")
    parser.add_argument("--min-top1", type=float, default=None, help="fail rows whose top-1 agreement is lower")
    parser.add_argument("--min-cosine", type=float, default=None, help="fail rows whose minimum cosine is lower")
    add_image_limit_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hubedge import benchmarks
    from hubedge.benchmarks import report
    from hubedge.runtimes.devices import DEVICES

    cluster = args.cluster or os.environ.get("RAY_ADDRESS")
    mode = benchmarks.reference_mode(args.reference_mode)
    if mode == "tf":
        if not cluster:
            import_tensorflow_quietly()  # the reference rows run TensorFlow here
        if args.reference:
            raise HubedgeError("--reference pairs latencies in recorded mode; with TensorFlow here the rows are paired "
                               "with the TF reference (add --reference-mode recorded to pair with an artifact)")
    else:
        say("reference: the FP32 outputs recorded at export, and for latency "
            + (f"{args.reference}" if args.reference else "each model's fp32 artifact of the same format")
            + ("" if args.reference_mode == "recorded" else " (TensorFlow is not installed)"))
    devices = DEVICES if args.device == "all" else (args.device,)
    threads = args.threads if cluster else args.threads or os.cpu_count()  # on a cluster: each node's cores
    options = benchmarks.BenchOptions(devices=devices, images=args.images, batches=args.batch, threads=threads,
                                      runs=args.runs, warmup=args.warmup, vendor_check=args.vendor_check,
                                      paired_blocks=args.paired_blocks, reference_mode=mode, reference=args.reference)
    baseline = read_baseline(args.baseline) if args.baseline else None  # a bad file fails before the run
    if baseline is not None:
        from hubedge.benchmarks.gate import require_scipy

        require_scipy()
    if args.plot:
        from hubedge.benchmarks.plot import require_matplotlib, write_plot

        require_matplotlib()

    def measure(paths: list[str]) -> dict:
        if cluster:
            from hubedge.benchmarks.fanout import bench_on_cluster

            return bench_on_cluster(paths, options, cluster, say)
        return benchmarks.bench(paths, options, progress=say)

    result = measure(args.artifacts)
    report.write(result, args.save_baseline, None, None)  # a baseline holds the measured rows, never a verdict
    verdict = None
    if baseline is not None:
        verdict = gate(result, baseline, args, measure)
    report.write(result, args.json, args.markdown, args.csv)
    if args.plot:
        write_plot(result, args.plot)
    print(report.markdown(result), end="")
    if verdict is not None:
        for note in verdict.notes:
            say(f"note: {note}")
        for problem in verdict.regressions:
            say(f"REGRESSION: {problem.message}")
        say(f"baseline {args.baseline}: "
            f"{'FAILED, ' + str(len(verdict.regressions)) + ' regression(s)' if verdict.regressions else 'passed'}")
    failed = [row for row in result["rows"] if row["status"] == "failed" and row["targeted"]]
    for row in result["rows"]:
        if row["status"] == "failed" and not row["targeted"]:
            say(f"note: {Path(row['artifact']).name} is not made for the {row['device']} (its manifest targets "
                f"{', '.join(row['targets'])}); its failure there is reported, not counted")
    return 1 if failed or (verdict is not None and not verdict.passed) else 0


def gate(result: dict, baseline: dict, args: argparse.Namespace, measure):
    """The gate's verdict, kept in the report under ``gate``; rows that slowed down are benched again once."""
    from hubedge.benchmarks.gate import GateOptions, judge

    gate_options = GateOptions(args.max_slowdown, args.min_top1, args.min_cosine, args.significance)

    def retime(artifacts: list[str]) -> dict:
        say(f"gate: rows slowed down past --max-slowdown; timing {len(artifacts)} artifact(s) once more")
        return measure(artifacts)

    verdict = judge(result, baseline, gate_options, retime)
    result["gate"] = {"baseline": str(args.baseline), **verdict.as_dict(gate_options)}
    return verdict


def read_baseline(path: str) -> dict:
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
        baseline["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HubedgeError(f"cannot read the baseline {path} ({error}); save one with --save-baseline") from None
    return baseline
