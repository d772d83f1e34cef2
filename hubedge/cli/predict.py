"""``hubedge predict``: top-k labels (or the embedding's size) for images, from an artifact or a model."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from hubedge.cli.common import SEEDED_NOTE, add_image_limit_argument, add_model_arguments, load_model, positive_int, say
from hubedge.runtimes.errors import HubedgeError


def add_parser(commands) -> None:
    parser = commands.add_parser("predict", help="top-5 labels (or embedding size) for images")
    add_model_arguments(parser, artifact=True)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, …)")
    parser.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "npu"),
                        help="where the artifact runs; 'hubedge devices' lists what is here (default: cpu)")
    parser.add_argument("--strict-device", action="store_true",
                        help="refuse to run if part of the graph would fall back to the CPU")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="runtime threads (default: the runtime's)")
    add_image_limit_argument(parser)
    parser.set_defaults(run=run)


def _artifact_outputs(args: argparse.Namespace, path: Path):
    """Runs an exported artifact on the images in a child process (``hubedge.runtimes.isolated``): a runtime that aborts
    on a damaged or hostile file is one line here. Returns the outputs, the model's contract and the runtime."""
    from hubedge.runtimes.isolated import run_isolated
    from hubedge.runtimes.manifest import fixed_input_size, model_info, read_manifest
    from hubedge.runtimes.preprocess import preprocess

    if args.weights != "hub" or args.twin_form != "edge":
        raise HubedgeError(f"--weights and --twin-form apply to models, not to the exported artifact {path}")
    manifest = read_manifest(path)
    info = model_info(manifest)
    batch = preprocess(list(args.images), fixed_input_size(manifest) or info.input_size)
    # no time limit: many images on a large model take long, and Ctrl-C stops the child
    run = run_isolated(path, args.device, batch, strict=args.strict_device, threads=args.threads, timeout_s=None)
    for warning in run.warnings:
        say(f"warning: {warning}")
    if run.device_note:
        say(f"note: {manifest['runtime']} on {args.device}: {run.device_note}")
    seeded = manifest.get("weights", {}).get("source") == "seeded"
    return run.outputs, info, manifest["runtime"], seeded


def _model_outputs(args: argparse.Namespace):
    """Runs a model (not an artifact) on the TF reference, in this process: loading a SavedModel is trusting it."""
    if args.device != "cpu":
        raise HubedgeError(f"--model {args.model} runs on the TF reference (CPU only); export it and pass the "
                           f"artifact to run on the {args.device}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(args.model, args.weights, args.threads, args.twin_form)
        predictor = loaded.reference(threads=args.threads)
    for warning in caught:
        say(f"warning: {warning.message}")
    return predictor.predict(list(args.images)), predictor.info, predictor.runtime, loaded.seeded


def run(args: argparse.Namespace) -> int:
    from hubedge.runtimes.manifest import has_manifest
    from hubedge.runtimes.preprocess import load_image

    for image in args.images:  # decode errors surface before any model is loaded
        load_image(image)
    path = Path(args.model)
    outputs, info, runtime, seeded = (_artifact_outputs(args, path) if has_manifest(path) else _model_outputs(args))
    records = []
    if info.task == "classification":
        from hubedge.runtimes.base import top_k_from_outputs

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
            print(f"{record['image']}  ({info.name}, {runtime}, {info.activation} scores)")
            for rank, p in enumerate(record["top_k"], 1):
                print(f"  {rank}. {p['score']:.4f}  {p['label']}  ({p['wordnet_id'] or p['index']})")
        else:
            print(f"{record['image']}  ({info.name}, {runtime}): "
                  f"feature vector, dim {record['dim']}, norm {record['norm']:.4f}")
    return 0
