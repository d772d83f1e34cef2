"""``hubedge export``: the flags, parsed into ``hubedge.exporter.export`` (``hubedge.exporter.api``), and its results
printed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hubedge.exporter.formats import FORMATS
from hubedge.exporter.options import (GRAPH_WRITERS, GRAPHS, INT8_CPUS, INT8_FALLBACKS, INT8_IO_CHOICES, OFFLOADS,
                                      ONNX_EXTERNAL_DATA_ABOVE, TFLITE_BUFFER_OFFSET_ABOVE, TFLITE_INT8_RECIPES)
from hubedge.cli.common import (INTERRUPTED, SEEDED_NOTE, add_image_limit_argument, add_model_arguments, load_model,
                                positive_int, say)
from hubedge.runtimes.errors import HubedgeError


def add_parser(commands) -> None:
    parser = commands.add_parser("export", help="export a model to edge formats, verified against FP32")
    add_model_arguments(parser, many=True)
    opt_in = ", ".join(name for name, fmt in FORMATS.items() if fmt.opt_in)
    parser.add_argument("--format", required=True,
                        help=f"one of {', '.join(FORMATS)}, a comma list, or all (every format but the opt-in "
                             f"{opt_in})")
    parser.add_argument("--quantize", default="none",
                        help="none (fp32), fp16, bf16 (openvino), dynamic (tflite), int8, or a comma list "
                             "(default: none)")
    parser.add_argument("--output", default="artifacts", help="output folder (default: artifacts/)")
    parser.add_argument("--calibration-data", default=None, metavar="DIR",
                        help="int8: folder of images that calibrate (default: the bundled calibration_data/)")
    parser.add_argument("--calibration-size", type=positive_int, default=None, metavar="N",
                        help="int8: calibration samples; beyond the photos, deterministic crops and flips "
                             "(default: one per photo, at least 64)")
    parser.add_argument("--int8-io", nargs="?", const="int8", default=None, choices=INT8_IO_CHOICES,
                        help="tflite int8: integer input/output tensors, int8 (the default when given bare) or "
                             "uint8 (raw camera pixels in, scale 1/255, float32 scores out, as MediaPipe Tasks "
                             "feeds them); scale and zero point go into the manifest")
    parser.add_argument("--tflite-int8-recipe", choices=TFLITE_INT8_RECIPES, default="xnnpack",
                        help="tflite int8: xnnpack (default) keeps the normalization ops XNNPACK cannot run in int8 "
                             "float, so the graph stays in one fast partition; full quantizes every op")
    parser.add_argument("--int8-cpu", choices=INT8_CPUS, default="portable",
                        help="int8: portable (default) is right on every CPU class; vnni (openvino) keeps the full "
                             "8-bit weights that saturate on x86 CPUs without VNNI, recorded as right only on VNNI/ARM")
    parser.add_argument("--accuracy-target", default=None, metavar="SPEC",
                        help="int8 (tflite, onnx, ort, openvino; qnn keeps activations at 16 bits instead of layers "
                             "float): keep the fewest layers float that make the artifact meet "
                             "SPEC on the calibration-side tuning split, e.g. sqnr_db=22, cosine_min=0.98 or "
                             "top1_margin=0.99,top5=0.95 (top1_margin: top-1 over images the FP32 model decides by a "
                             "margin of at least 0.05); written as <model>.<format>.int8-accuracy beside plain int8")
    parser.add_argument("--int8-fallback", choices=INT8_FALLBACKS, default="search",
                        help="int8 (tflite, onnx, ort, openvino, qnn) without --accuracy-target: when plain int8 "
                             "misses its verification floor, search (default) keeps the fewest layers float that meet "
                             "the floor and writes that under the plain int8 name, both trials in the manifest; none "
                             "fails and writes nothing")
    parser.add_argument("--graph", choices=GRAPHS, default="auto",
                        help="auto (default): a module recognised as a BiT is re-authored into hubedge's edge graph "
                             "(static GroupNorm, weight standardization folded), verified against the module as "
                             "loaded; as-is: convert the module's own graph, its 5-D GroupNorms computed in 4-D "
                             "where that is proven equal on photos; verbatim: convert the module's graph untouched")
    parser.add_argument("--graph-writer", choices=GRAPH_WRITERS, default="direct",
                        help="onnx, ort, qnn, openvino: direct (default) writes a BiT in hubedge's edge graph straight "
                             "from its weights, in the converters' ops and a fraction of their memory; converter: "
                             "tf2onnx and ov.convert_model, as for any other model")
    parser.add_argument("--verify-cpu", default="native", metavar="native|all|CLASS[,CLASS]",
                        help="verify on this CPU (default); all: also as each CPU class it can emulate (x86 without "
                             "VNNI through qemu-user-static; arm64-dotprod and arm64-no-dotprod through qemu-aarch64 "
                             "and the aarch64 Python of `make arm64-env`; slow); or a comma list of those classes")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="onnx, ort, openvino: fix the batch dimension to N images, static shapes throughout "
                             "(1: as ONNX Runtime Mobile's NNAPI and CoreML providers need; up to 256); default: a "
                             "dynamic batch. tflite and qnn files are batch 1 always (--batch 1 is accepted)")
    parser.add_argument("--require-offload", choices=OFFLOADS, default=None,
                        help="fail an export that this accelerator would not take whole, by its vendor's tool: nnapi "
                             "or coreml (onnx: ONNX Runtime's mobile usability checker), gpu (tflite: TF's GPU "
                             "delegate analyzer); every export records that report in its manifest")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the check against the FP32 reference (recorded in the manifest)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run the jobs on this existing Ray cluster (default: $RAY_ADDRESS, else a private "
                             "local Ray instance when there is more than one model); --output must then be a folder "
                             "every node sees")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run only the jobs that failed in the last run into --output")
    parser.add_argument("--job-cpus", type=positive_int, default=1, metavar="N",
                        help="CPUs (and threads) each export job of a Ray run takes (default: 1)")
    parser.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                        help="the memory a step may use, e.g. 20GB; a step (loading the model, one format's "
                             "export) whose estimated peak exceeds it is refused before it starts (default: what is "
                             "available on this machine when the step starts)")
    parser.add_argument("--onnx-external-data-above", type=memory_size, default=ONNX_EXTERNAL_DATA_ABOVE,
                        metavar="SIZE",
                        help="onnx, qnn: from this much weight on, keep the weights in <artifact>.onnx.data beside the "
                             ".onnx file (ONNX external data, offsets aligned for memory mapping), as files past "
                             "protobuf's 2 GiB limit must; 0: always (default: 1.88 GB, the most allowed)")
    parser.add_argument("--tflite-buffer-offset-above", type=memory_size, default=TFLITE_BUFFER_OFFSET_ABOVE,
                        metavar="SIZE",
                        help="tflite fp32, fp16, dynamic: from this much weight on, keep the weights after the "
                             "flatbuffer at offsets (the buffer-offset layout, with its metadata), as files past the "
                             "flatbuffer's 2 GiB limit must; 0: always (default: 1.88 GB, the most allowed)")
    add_image_limit_argument(parser)
    parser.set_defaults(run=run)


def memory_size(text: str) -> int:
    from hubedge.exporter.memory_budget import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def checked_plan(args: argparse.Namespace) -> tuple:
    """The export options and (format, precision) pairs the flags ask for, with everything that can be refused
    before a model loads refused (one line each; export() says the notes once)."""
    from hubedge.exporter.api import ExportOptions, check_options, planned_pairs

    options = ExportOptions(calibration_data=args.calibration_data, calibration_size=args.calibration_size,
                            int8_io=args.int8_io, tflite_int8_recipe=args.tflite_int8_recipe,
                            int8_cpu=args.int8_cpu, graph=args.graph, verify_cpu=args.verify_cpu,
                            accuracy_target=args.accuracy_target, int8_fallback=args.int8_fallback,
                            batch=args.batch, require_offload=args.require_offload,
                            onnx_external_data_above=args.onnx_external_data_above,
                            tflite_buffer_offset_above=args.tflite_buffer_offset_above,
                            graph_writer=args.graph_writer)
    pairs = planned_pairs(args.format, args.quantize, lambda _: None)  # --format: a comma list, or "all"
    check_options(pairs, options, not args.no_verify, lambda _: None)
    return options, pairs


def run(args: argparse.Namespace) -> int:
    from hubedge.exporter.api import ExportsFailed, export
    from hubedge.exporter.fsutil import ensure_writable_dir, remove_stale_work
    from hubedge.exporter.zoo import expand_models

    options, pairs = checked_plan(args)
    formats = args.format
    remove_stale_work(ensure_writable_dir(Path(args.output)), say)  # even where loading is refused next
    models = expand_models(args.model)
    cluster = args.cluster or os.environ.get("RAY_ADDRESS")
    if len(models) > 1 or cluster or args.retry_failed:
        return run_on_ray(args, models, pairs, options, cluster)
    from hubedge.exporter.api import load_step
    from hubedge.exporter.memory_budget import check_load

    check_load(models[0], args.memory_budget, load_step(models[0], args.weights))
    loaded = load_model(models[0], args.weights, twin_form=args.twin_form)  # TF quieted, threads set, then loaded
    if loaded.seeded:
        say(SEEDED_NOTE)
    try:
        results = export(loaded, formats=formats, precisions=args.quantize, output=args.output, options=options,
                         verify=not args.no_verify, progress=say, interrupted=INTERRUPTED.is_set,
                         memory_budget=args.memory_budget)
    except ExportsFailed as failed:
        print_results(failed.results)
        say(str(failed))
        return 1
    print_results(results)
    return 0


def run_on_ray(args: argparse.Namespace, models: list[str], pairs: list, options, cluster: str | None) -> int:
    """Several models, or a cluster: every (model, format, precision) job as a Ray task (``hubedge.exporter.zoo``)."""
    from hubedge.exporter.zoo import plan_jobs
    from hubedge.exporter.zoo.fanout import run_jobs

    if args.no_verify:
        raise HubedgeError("--no-verify applies to one model at a time; a catalog run verifies every artifact")
    if args.memory_budget is not None:
        raise HubedgeError("--memory-budget applies to one model at a time; a catalog run asks Ray for each job's "
                           "estimated memory, and Ray starts only the jobs that fit")
    jobs = plan_jobs(models, args.weights, args.twin_form, pairs, options)
    where = f"the Ray cluster at {cluster}" if cluster else "a local Ray instance"
    say(f"{len(models)} model(s) × {len(pairs)} format/precision pair(s) = {len(jobs)} job(s), on {where}")
    summary = run_jobs(jobs, Path(args.output), cluster=cluster, retry_failed=args.retry_failed,
                       threads=args.job_cpus, progress=say)
    print(f"{summary.line()}; each job's record: {Path(args.output) / 'hubedge-jobs.json'}")
    for reason in summary.failed.values():
        print(f"  FAILED: {reason}")
    from hubedge.benchmarks import catalog_report

    catalog_report.write(args.output, say)
    if summary.failed:
        say(f"{len(summary.failed)} job(s) failed; hubedge export ... --retry-failed runs only those")
    return 1 if summary.failed else 0


def accuracy_aware_line(result) -> str:
    """What an accuracy-aware search chose, and what it costs against plain int8, for the summary."""
    search = result.quantization.get("accuracy_aware")
    if not search:
        return ""
    speed = search.get("speed_vs_plain_int8", {})
    cost = f", {speed['ratio']:.2f}× plain int8's latency ({speed['accuracy_aware_p50_ms']:.1f} vs " \
           f"{speed['plain_int8_p50_ms']:.1f} ms, paired at export)" if "ratio" in speed else \
        ", speed not measured here" if "not_measured" in speed else ""
    items, kept = ("tensors", search["a16_tensors"]) if "a16_tensors" in search else ("layers", search["float_layers"])
    return f"  [{len(kept)} of {search[f'quantized_{items}']} {search.get('kept', 'layers float')}{cost}]"


def print_results(results: list) -> None:
    """One line per artifact: size, time, peak memory and what verification found."""
    from hubedge.exporter.pipeline import verified_cpu_line
    from hubedge.exporter.verify.deployability import summary_line as deployability_line
    from hubedge.exporter.verify.fallback import fallback_line
    from hubedge.exporter.verify.mobile_sdk import summary_line

    print(f"{'artifact':60} {'MB':>8} {'s':>7} {'peak MB':>8}  verification")
    for r in results:
        v = r.verification
        if "skipped" in v:
            check = "skipped (--no-verify)"
        else:
            check = "ok" if v["passed"] else "FAILED"
            check += f"  cosine_min {v['cosine_min']:.6f}"
            if "top1" in v:
                check += f"  top1 {v['top1']:.3f}  top5 {v['top5']:.3f}"
                check += (f"  top1_margin {v['top1_margin']:.3f} ({v['top1_margin_images']} images)"
                          if "top1_margin" in v else "  top1_margin n/a (no image decided by a clear margin)")
            if "accuracy_target" in v:
                aimed = v["accuracy_target"]
                held = ("missed on the verification images: " + ", ".join(aimed["missed"]) if aimed["missed"]
                        else "met on the verification images too")
                for name, run in v.get("cpu_classes", {}).items():  # an emulated class, on the photos alone
                    if "accuracy_target_missed" in run:
                        missed = run["accuracy_target_missed"]
                        held += f"; as {name}: " + ("missed " + ", ".join(missed) if missed else "met")
                check += f"  (accuracy target {aimed['target']}: {held})"
            if v.get("target", {}).get("missed"):
                check += f"  (trained-weights target missed: {', '.join(v['target']['missed'])})"
            check += f"  [{verified_cpu_line(v)}]"
            if "mobile_sdk" in v:
                check += f"  [{summary_line(v['mobile_sdk'])}]"
        check += accuracy_aware_line(r)
        print(f"{str(r.artifact):60} {r.size_bytes / 1e6:8.1f} {r.seconds:7.1f} {r.peak_rss_mb:8d}  {check}")
        if line := fallback_line(r.format, r.precision, r.quantization, r.verification):
            print(f"  {line}")
        if deploy := deployability_line(r.deployability):
            print(f"  deployability: {deploy}")
