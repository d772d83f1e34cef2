"""One benchmark run: every artifact × device here, plus each model's reference.

Artifacts are grouped by model and weights. In ``tf`` mode each group's FP32 TF reference is rebuilt from what
the manifests record (catalog name and weight source) and measured in the same run, so latency ratios and
agreement are against a reference from this machine and these images. In ``recorded`` mode (no TensorFlow: an
edge device) agreement is against the FP32 outputs recorded at export (``hubedge.runtimes.reference``) and latency
ratios against a reference artifact measured here. A device that is not here, or an artifact that fails to
load, is a row that says so, never a number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from hubedge import runtimes
from hubedge.benchmarks.latency import measure, p50_now, paired_timing, predict_overhead
from hubedge.benchmarks.vendor import vendor_timing
from hubedge.runtimes.agreement import agreement_with_reference
from hubedge.runtimes.base import Predictor
from hubedge.runtimes.cpu import ALL_CLASSES, cpu_class, cpu_model, machine_record
from hubedge.runtimes.devices import DEVICES, status
from hubedge.runtimes.errors import HubedgeError, InvalidInputError
from hubedge.runtimes.integrity import member
from hubedge.runtimes.isolated import run_isolated
from hubedge.runtimes.manifest import SCHEMA, fixed_input_size, manifest_path, read_manifest
from hubedge.runtimes.memory import PeakMemory
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.preprocess import list_images, preprocess


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    devices: tuple[str, ...] = ("cpu",)
    images: str | None = None  # folder; default: the held-apart bundled photos (never calibration ones)
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    runs: int = 20
    warmup: int = 3
    vendor_check: bool = False  # also time each CPU row with the runtime's own timer (benchmarks.vendor)
    paired_blocks: int = 6  # blocks alternating each row with its TF reference for `× ref` (0: no pairing)
    paired_calls: int = 5  # timed calls per block
    reference_mode: str = "auto"  # tf, recorded, or auto: tf where TensorFlow is installed (see reference_mode)
    reference: str | None = None  # recorded mode: the artifact every row's latency is paired with


# Every `× ref` ratio divides by the TF reference's p50, and TF's own latency drifts between blocks of calls in one
# process (benchmarks/records/settings-figures.md), so the denominator is timed over this many times the runs.
REFERENCE_RUNS_FACTOR = 3


def _manifested_artifact(manifest_file: Path) -> Path | None:
    """The artifact a hubedge manifest names, or None when the JSON is something else (a saved report)."""
    try:
        record = json.loads(manifest_file.read_text(encoding="utf-8"))
        name = record["artifact"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None
    artifact = member(manifest_file.parent, name, "the artifact")  # a name beside it, or refused loudly
    return artifact if artifact.exists() and manifest_path(artifact) == manifest_file else None


def find_artifacts(paths: list[str]) -> list[Path]:
    """Artifacts named directly or through their manifests, or every artifact with a manifest in a folder."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir() and not path.suffix:
            found += [a for a in map(_manifested_artifact, sorted(path.glob("*.json"))) if a is not None]
        elif path.suffix == ".json" and path.is_file():
            artifact = _manifested_artifact(path)
            if artifact is None:
                raise InvalidInputError(f"{path} is not a hubedge manifest of an existing artifact")
            found.append(artifact)
        elif path.exists():
            found.append(path)
        else:
            raise InvalidInputError(f"no artifact or folder at {path}")
    if not found:
        raise InvalidInputError(f"no artifacts with manifests in {', '.join(paths)}; export some with 'hubedge export'")
    return list(dict.fromkeys(found))  # named twice (a file and its folder): benched once


def machine_info(threads: int | None) -> dict[str, Any]:
    import importlib.metadata

    versions = {}
    for package in ("hubedge", "tensorflow", "ai-edge-litert", "onnxruntime", "onnxruntime-qnn", "openvino", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    record = machine_record()  # the CPU class and ISA features the runtimes dispatch on
    return {"host": platform.node(), "cpu": cpu_model() or platform.processor(), "cores": os.cpu_count(),
            "machine": platform.machine(),
            "cpu_class": record["class"], "cpu_features": record["features"],
            **({"cpu_emulated": record["emulated"]} if record["emulated"] else {}),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "threads": threads, "versions": versions}


def _reference(manifest: dict[str, Any]):
    """The FP32 TF reference for the model an artifact was exported from, loaded as its manifest records."""
    from hubedge.exporter.sources import load_model
    weights = manifest.get("weights", {})
    saved = weights.get("savedmodel", "")
    if saved and Path(saved).is_dir():  # the very SavedModel the artifact was exported from
        loaded = load_model(saved, "hub")
    else:
        source = weights.get("source")
        model = manifest["model"]["name"] if source in ("seeded", "npz", "package") else weights.get("location")
        choice = {"seeded": "seeded", "npz": weights.get("checkpoint"), "package": "package", "hub": "hub",
                  "savedmodel": "hub"}.get(source)
        if not model or not choice:
            raise HubedgeError(f"the manifest does not say how to rebuild its reference (weights: {weights})")
        if source == "npz" and weights.get("location") == weights.get("checkpoint"):  # the .npz was the model
            model, choice = weights["checkpoint"], "hub"
        loaded = load_model(model, choice, weights.get("graph", "edge"))
    expected, found = weights.get("sha256"), loaded.weights_record().get("sha256")
    if expected and found != expected:
        raise HubedgeError(f"the reference weights for {manifest['model']['name']} differ from those the artifact "
                           "was exported from (sha256 mismatch); re-export the artifact")
    return loaded


def _row(artifact: Path | str, manifest: dict[str, Any], runtime: str, device: str, **extra: Any) -> dict[str, Any]:
    right_on = manifest.get("cpu_classes", {}).get("right_on", list(ALL_CLASSES))
    return {
        "artifact": str(artifact), "model": manifest["model"]["name"],
        "weights": manifest.get("weights", {}).get("source", ""), "format": manifest.get("format", ""),
        "precision": manifest.get("precision", ""), "variant": manifest.get("variant", ""), "runtime": runtime,
        "device": device, "right_on": right_on, "graph": manifest.get("graph", {}).get("route", "as-is"), **extra,
    }


def _measure_row(predictor_factory, images: np.ndarray, reference: np.ndarray, info: ModelInfo,
                 options: BenchOptions, paired_with: Predictor | None = None) -> tuple[dict[str, Any], Predictor]:
    """The row's figures, and its predictor (the reference row's is kept to pair the artifacts with)."""
    with PeakMemory() as peak:
        started = time.perf_counter()
        predictor = predictor_factory()
        load_s = time.perf_counter() - started
        latency = measure(predictor, images, options.runs, options.warmup, list(options.batches))
        overhead = predict_overhead(predictor, images[:1], options.runs) if options.vendor_check else None
        outputs = predictor.predict(images)
    # outside the row's peak memory: it runs the reference too
    paired = (paired_timing(predictor, paired_with, images[:1], options.paired_blocks, options.paired_calls)
              if paired_with is not None and options.paired_blocks > 0 else None)
    agreement = agreement_with_reference(reference, outputs, info)
    note = predictor.device_status.note if predictor.device_status else ""
    layout = getattr(predictor, "cpu_layout", {}) or {}
    if layout.get("layout", "default") != "default":  # ONNX Runtime's graph layout, timed at first load
        trial = layout["trial_ms"]
        chosen = f"{layout['layout']} layout ({trial[layout['layout']]} ms against {trial['default']} ms at first load)"
        note = f"{note}; {chosen}" if note else chosen
    return {
        "status": "ok", "reason": "", "note": note, "load_s": round(load_s, 3),
        "first_call_ms": latency.first_call_ms, "latency_ms": latency.latency_ms(),
        "throughput": {str(k): v for k, v in latency.throughput.items()}, "runs": latency.runs,
        "peak_rss_mb": round(peak.bytes / 2**20), "threads": options.threads,
        "agreement": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in agreement.items()},
        "placement": getattr(predictor, "placement", {}) or {},
        **({"cpu_layout": layout} if layout else {}),
        **({"predict_overhead": {"predict_p50_ms": round(overhead[0], 3), "direct_p50_ms": round(overhead[1], 3),
                                 "overhead": round(overhead[0] / overhead[1] - 1.0, 4)}} if overhead else {}),
        **({"vs_reference": paired.as_dict()} if paired else {}),
    }, predictor


REFERENCE_MODES = ("auto", "tf", "recorded")


def reference_mode(choice: str = "auto") -> str:
    """``tf`` (rebuild and time each model's TensorFlow reference) where TensorFlow is installed, else
    ``recorded`` (agreement against the outputs recorded at export, latency against a reference artifact)."""
    import importlib.util

    if choice not in REFERENCE_MODES:
        raise InvalidInputError(f"unknown reference mode {choice!r}; choose {', '.join(REFERENCE_MODES)}")
    try:
        has_tf = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorflow_hub"))
    except (ImportError, ValueError):  # a broken or blocked installation counts as none
        has_tf = False
    if choice == "tf" and not has_tf:
        raise InvalidInputError("--reference-mode tf needs TensorFlow and tensorflow-hub (pip install hubedge[export]);"
                                " without them bench uses the references recorded at export (--reference-mode recorded)")
    return choice if choice != "auto" else ("tf" if has_tf else "recorded")


def _recorded_reference(members: list[tuple[Path, dict[str, Any]]],
                        images: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The recorded FP32 outputs every member names (one file, checked), the images they belong to, and a note.
    Where this machine's preprocessing of the photos differs from export's, the recorded input batch is used."""
    from hubedge.runtimes.reference import batch_sha256, read_recorded, read_recorded_inputs

    recorded = [read_recorded(manifest, artifact.parent) for artifact, manifest in members]
    first = recorded[0]
    if any(not np.array_equal(other.outputs, first.outputs) for other in recorded[1:]):
        raise HubedgeError(f"the artifacts of {members[0][1]['model']['name']} name different recorded references; "
                           "re-export them together")
    if batch_sha256(images) == first.input_sha256:
        return first.outputs, images, ""
    import PIL

    artifact, manifest = members[0]
    try:
        recorded_images = read_recorded_inputs(manifest, artifact.parent)
    except HubedgeError as error:
        raise HubedgeError(f"this machine's preprocessing of the evaluation photos differs from export's (Pillow "
                           f"{PIL.__version__} here), and {error}") from None
    return first.outputs, recorded_images, (f"preprocessing here (Pillow {PIL.__version__}) differs from export's: "
                                            "judged on the recorded input batch")


def _latency_partner(artifact: Path, manifest: dict[str, Any], members: list[tuple[Path, dict[str, Any]]],
                     chosen: str | None) -> Path | None:
    """The artifact a row's latency is paired with in recorded mode: ``--reference``, else the model's fp32
    artifact on the same runtime (None when there is none)."""
    if chosen:
        return Path(chosen)
    return next((a for a, m in members if m["runtime"] == manifest["runtime"] and m.get("precision") == "fp32"
                 and m.get("format") == manifest.get("format")), None)


def run(paths: list[str], options: BenchOptions, progress=print) -> dict[str, Any]:
    """Benchmarks the artifacts under ``paths``; returns ``{"machine": …, "reference_mode": …, "rows": […]}``."""
    for device in options.devices:
        if device not in DEVICES:
            raise InvalidInputError(f"unknown device {device!r}; choose from {', '.join(DEVICES)} or all")
    mode = reference_mode(options.reference_mode)
    if mode == "recorded" and options.images:
        raise InvalidInputError("--images needs the TF reference: the recorded references cover the evaluation "
                                "photos export used; drop --images, or bench where TensorFlow is installed")
    artifacts = find_artifacts(paths)
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for artifact in artifacts:
        manifest = read_manifest(artifact)
        key = (manifest["model"]["name"], manifest.get("weights", {}).get("sha256", ""))
        groups.setdefault(key, []).append((artifact, manifest))
    if mode == "recorded" and options.reference:
        chosen = read_manifest(options.reference)
        chosen_key = (chosen["model"]["name"], chosen.get("weights", {}).get("sha256", ""))
        if set(groups) != {chosen_key}:
            raise InvalidInputError(f"--reference {options.reference} is an artifact of {chosen_key[0]}; it can only "
                                    "pair artifacts of that model and weights")
        groups[chosen_key].append((Path(options.reference), chosen))
    photos = list_images(options.images) if options.images else None
    if photos == []:
        raise InvalidInputError(f"no images in {options.images}")
    rows, image_sets = [], []
    for (model, _), members in groups.items():
        members = _unique(members)  # --reference may also be among the artifacts
        first = members[0][1]
        info = runtimes.model_info(first)
        if photos is not None:
            images, image_set = preprocess(photos, info.input_size), options.images
        else:  # the set export verified on: the evaluation photos and crops of each
            from hubedge.exporter.pipeline import evaluation_set

            chosen_set = evaluation_set(info.input_size)
            images, image_set = chosen_set.images, chosen_set.description
        image_sets.append(f"{model}: {len(images)} images ({image_set})")
        runnable = any(status(manifest["runtime"], device).available for _, manifest in members
                       for device in options.devices)
        if not runnable:  # every row will say "not available": no reference to compute or time
            reference_outputs, reference_predictor = None, None
        elif mode == "tf":
            reference_outputs, reference_predictor = _tf_reference_row(first, images, info, options, rows, progress)
        else:
            progress(f"{model}: FP32 outputs recorded at export …")
            reference_outputs, images, note = _recorded_reference(members, images)
            reference_predictor = None
            if note:
                progress(f"note: {model}: {note}")
                image_sets[-1] += f"; {note}"
        partners: dict[tuple[Path, str], Predictor | None] = {}

        def measure_member(artifact: Path, manifest: dict[str, Any], device: str, is_reference: bool = False,
                           paired_with: Predictor | None = None) -> Predictor | None:
            runtime = manifest["runtime"]
            found = status(runtime, device)
            targets = manifest.get("devices", ["cpu"])
            base = _row(artifact, manifest, runtime, device, reference=is_reference, size_mb=_size_mb(artifact),
                        targets=targets, targeted=device in targets)
            if is_reference:
                base["reference_kind"] = "artifact"
            if not found.available:
                rows.append({**base, "status": "not available", "reason": f"not available here: {found.reason}"})
                return None
            progress(f"{artifact.name} on {device} …")
            try:
                if runtime != "tf":  # first in a child: a runtime that aborts on the file is a row, not the end
                    run_isolated(artifact, device, images[:1], strict=False, threads=options.threads)
                figures, predictor = _measure_row(
                    lambda a=artifact, d=device: runtimes.load(a, device=d, threads=options.threads),
                    images, reference_outputs, runtimes.model_info(manifest), options, paired_with=paired_with)
                if device == "cpu" and cpu_class() not in base["right_on"]:
                    wrong = f"recipe right only on {', '.join(base['right_on'])}, not on this {cpu_class()} CPU"
                    figures["note"] = f"{figures['note']}; {wrong}" if figures["note"] else wrong
                rows.append({**base, **figures})
            except HubedgeError as error:
                rows.append({**base, "status": "failed", "reason": str(error)})
                return None
            if options.vendor_check and device == "cpu":
                progress(f"{artifact.name}: the runtime's own timer …")
                rows[-1]["vendor"] = vendor_timing(rows[-1], options.threads or os.cpu_count() or 1,
                                                   options.runs, options.warmup, fixed_input_size(manifest),
                                                   ours_now=lambda: p50_now(predictor, images[:1], options.runs))
            return predictor

        by_path = {artifact.resolve(): manifest for artifact, manifest in members}
        for artifact, manifest in members:
            for device in options.devices:
                if mode == "tf":
                    measure_member(artifact, manifest, device, paired_with=reference_predictor)
                    continue
                partner = _latency_partner(artifact, manifest, members, options.reference)
                key = (partner.resolve(), device) if partner is not None else None
                if key is not None and key not in partners:
                    partners[key] = measure_member(partner, by_path[key[0]], device, is_reference=True)
                if key is not None and key[0] == artifact.resolve():
                    continue  # measured just now, as the latency reference of its runtime
                measure_member(artifact, manifest, device, paired_with=partners.get(key))
                if partner is None:
                    rows[-1]["note"] = (f"{rows[-1].get('note', '')}; " if rows[-1].get("note") else "") + \
                        "no fp32 artifact of this format to pair its latency with (pass --reference)"
                else:
                    rows[-1]["reference_artifact"] = str(partner)
    pair_accuracy_aware(rows)
    return {"machine": machine_info(options.threads), "reference_mode": mode, "image_sets": image_sets, "rows": rows}


def pair_accuracy_aware(rows: list[dict[str, Any]]) -> None:
    """Gives each accuracy-aware int8 row its latency against the plain int8 row of the same model, format and
    device measured in this run (``vs_plain_int8``), and says so in its note. Where both were timed in blocks
    alternating with the same reference, the ratio of their ``× ref`` is used: on a machine whose speed drifts,
    p50s measured minutes apart are not comparable (measured: 0.85× from p50s against 1.40× from
    litert-benchmark for the same pair)."""
    plain = {(row["model"], row["format"], row["device"]): row for row in rows
             if row.get("status") == "ok" and row["precision"] == "int8" and not row.get("variant")}
    for row in rows:
        if row.get("status") != "ok" or row.get("variant") != "accuracy-aware" or row.get("reference"):
            continue
        partner = plain.get((row["model"], row["format"], row["device"]))
        if partner is None:
            text = "no plain int8 artifact of this format in the run to compare its speed with"
        elif (row.get("vs_reference") or {}).get("ratio") and (partner.get("vs_reference") or {}).get("ratio") \
                and row.get("reference_artifact") == partner.get("reference_artifact"):  # paired with one reference
            row["vs_plain_int8"] = round(row["vs_reference"]["ratio"] / partner["vs_reference"]["ratio"], 3)
            text = f"{row['vs_plain_int8']:.2f}× plain int8's latency, each paired with the reference"
        else:
            row["vs_plain_int8"] = round(row["latency_ms"]["p50"] / partner["latency_ms"]["p50"], 3)
            text = f"{row['vs_plain_int8']:.2f}× plain int8's p50"
        row["note"] = f"{row['note']}; {text}" if row.get("note") else text


def _unique(members: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    seen: dict[Path, tuple[Path, dict[str, Any]]] = {}
    for artifact, manifest in members:
        seen.setdefault(artifact.resolve(), (artifact, manifest))
    return list(seen.values())


def _tf_reference_row(first: dict[str, Any], images: np.ndarray, info, options: BenchOptions,
                      rows: list[dict[str, Any]], progress) -> tuple[np.ndarray, Predictor]:
    """Rebuilds and times the model's FP32 TF reference as the group's first row."""
    from hubedge.runtimes.tf_reference import set_threads

    progress(f"{first['model']['name']}: FP32 TF reference …")
    tf_threads = set_threads(options.threads, strict=False)  # TF pins its pools once per process
    loaded = _reference(first)
    reference_outputs = loaded.reference().predict(images)
    figures, reference_predictor = _measure_row(
        loaded.reference, images, reference_outputs, loaded.info,
        dataclasses.replace(options, runs=options.runs * REFERENCE_RUNS_FACTOR))
    row = _row(loaded.savedmodel_dir, first, "tf", "cpu", format="tf-reference", precision="fp32", variant="",
               graph="as-is",
               reference=True, reference_kind="tf", targets=["cpu"], targeted=True,
               size_mb=_size_mb(loaded.savedmodel_dir), **figures)
    row["threads"] = tf_threads
    rows.append(row)
    return reference_outputs, reference_predictor


def _size_mb(path: Path | str) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return round(sum(p.stat().st_size for p in files if p.exists()) / 1e6, 2)
