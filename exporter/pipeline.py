"""One export: convert, verify against the FP32 reference, write the manifest, publish atomically.

The artifact and its manifest are built under a temporary name; only when the artifact has been loaded
through its runtime and met its precision's floor are they renamed into place (artifact first, manifest
last, so a manifest always means a finished artifact).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubedge import calibration_data
from hubedge.exporter.verify import cpu_emulation, deployability, mobile_sdk
from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.exporter.quantize.calibration import augment
from hubedge.exporter.formats import ACCURACY_VARIANT, Floor, Format, Shortfall, floor_for, yardstick_target
from hubedge.exporter.fsutil import atomic_path, ensure_writable_dir
from hubedge.exporter.manifest import build_manifest, write_manifest
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.graph.reauthor import choose_graph
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes import reference
from hubedge.runtimes.agreement import SUMMARY_KEYS, agreement_with_reference
from hubedge.runtimes.cpu import ARM64_CLASSES
from hubedge.runtimes.devices import status
from hubedge.runtimes.errors import CannotCompileError, HubedgeError, UnsupportedError
from hubedge.runtimes.isolated import RuntimeCrashed, predict_isolated
from hubedge.runtimes.manifest import manifest_path
from hubedge.runtimes.memory import PeakMemory
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.progress import REFERENCE_CHUNK_IMAGES, Progress, predict_in_chunks
from hubedge.runtimes.preprocess import load_image, preprocess, resize_square

__all__ = ["EVALUATION_CROPS", "EvaluationSet", "ExportResult", "VerificationFailed",
    "evaluation_set", "export_one", "record_reference", "verification_device", "verification_images",
    "verified_cpu_line", "verify"]


class VerificationFailed(HubedgeError):
    """An artifact fell below its precision's floor; it is not published.

    ``shortfalls``: each figure that fell short (``hubedge.exporter.formats.Shortfall``: metric, value, limit, and
    where it was measured); ``verification``: the whole record the manifest would have carried."""

    def __init__(self, message: str, shortfalls: list[Shortfall], verification: dict[str, Any]) -> None:
        super().__init__(message)
        self.shortfalls, self.verification = shortfalls, verification


@dataclasses.dataclass
class ExportResult:
    artifact: Path
    format: str
    precision: str
    size_bytes: int
    seconds: float
    peak_rss_mb: int
    verification: dict[str, Any]
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)  # the manifest's recipe record
    deployability: dict[str, Any] = dataclasses.field(default_factory=dict)  # exporter.verify.deployability's report


EVALUATION_CROPS = 2  # per evaluation photo: 44 photos × 3 views, one flip is 0.8 %
# an emulated CPU class judges float artifacts on every 4th photo (11 of 44): float kernels differ between x86
# classes only in rounding order, and an emulated float image costs 2-3 s (EfficientNet-Lite0 under QEMU); the
# quantized precisions, whose integer kernels do differ (int8 saturating without VNNI), keep all 44, and so do
# fp16 and bf16 on arm64, whose cores with FP16 arithmetic run an fp16 graph in fp16 where x86 computes in fp32
# (EfficientNet-Lite0's fp16 ONNX on 11 photos: top-5 0.982 as arm64-dotprod)
EMULATED_FLOAT_STRIDE = 4
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """Preprocessed images an artifact is judged on, and what they are (recorded in manifests and reports)."""

    images: np.ndarray
    description: str
    photos: tuple[Path, ...]
    views_per_photo: int = 1  # each photo followed by its crops: images[::views_per_photo] are the photos

    def photos_only(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The photos themselves, without their crops, and the matching rows of ``outputs``."""
        return self.images[:: self.views_per_photo], outputs[:: self.views_per_photo]


def verification_images(size: int, crops: int = 0, photos: list[Path] | None = None) -> np.ndarray:
    """``photos`` (default: the split's held-apart photos; never calibration photos) at ``size``, each followed
    by ``crops`` deterministic crops and flips of it (the calibration set's augmentations, applied to photos it
    never sees)."""
    photos = calibration_data.held_apart_photos() if photos is None else photos
    if not crops:
        return preprocess(photos, size)
    images = []
    for path in photos:
        photo = load_image(path)
        images += [resize_square(augment(photo, variant), size) for variant in range(crops + 1)]
    return np.stack(images).astype(np.float32) / np.float32(255.0)


@functools.lru_cache(maxsize=2)
def evaluation_set(size: int) -> EvaluationSet:
    """Every artifact, of trained or seeded weights, is judged on every evaluation photo and crops of each: on
    fewer images one flip moves top-1 by 11 %, and a minimum over them misses the photos that drive a recipe
    hardest (a seeded BiT's plain TFLite int8 passed on 9 photos at cosine_min 0.93 and fell to 0.78 on these).

    Made once per size and process (decoding and cropping the photos took about a second per export; two sizes are
    kept, 80 MB at 224 px), and read-only, so that no caller can change the images another export is judged on."""
    photos = calibration_data.evaluation_photos()
    description = (f"held-apart and evaluation-only bundled photos ({len(photos)}) and {EVALUATION_CROPS} crops of "
                   f"each ({len(photos) * (EVALUATION_CROPS + 1)} images)")
    images = verification_images(size, EVALUATION_CROPS, photos)
    images.flags.writeable = False
    return EvaluationSet(images, description, tuple(photos), EVALUATION_CROPS + 1)


def verification_device(fmt: Format) -> str:
    """The first of the format's devices present here: a qnn artifact is judged on the NPU's arithmetic."""
    return next((d for d in fmt.devices if status(fmt.runtime, d).available), "cpu")


def compute_reference(loaded: LoadedModel, images: np.ndarray,
                      progress: Callable[[str], None] | None = None) -> np.ndarray:
    """The FP32 module's outputs on ``images``, a chunk at a time: one chunk's activations held, not the whole
    batch's (gigabytes on the largest BiTs), and ``progress`` hears how far it is on a long pass."""
    said = Progress(progress, "FP32 reference", len(images))
    return predict_in_chunks(loaded.reference().predict, images, said.update, size=REFERENCE_CHUNK_IMAGES)


def verify(artifact: Path, fmt: Format, precision: str, reference_outputs: np.ndarray, images: EvaluationSet,
           info: ModelInfo, floor: Floor, target: Floor | None = None, right_on: tuple[str, ...] = (),
           verify_cpu: str = "native", accuracy_target: AccuracyTarget | None = None,
           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs ``artifact`` through its runtime, in a child process that a crashing runtime cannot take the export
    down with (``hubedge.runtimes.isolated``), and compares with the reference outputs on the same images.

    With ``verify_cpu="all"`` (or a list of classes) a CPU artifact is also run as each other CPU class of
    ``right_on`` that this machine can emulate (``hubedge.exporter.verify.cpu_emulation``), against the same floor: the
    recipe claims to be right there, so falling short there fails it too. Classes that cannot be checked here are named,
    with why. An emulated class is judged on the photos without their crops: the emulator is far slower than the CPU,
    and the fault it exists to catch (int8 saturating without VNNI) shows on every image; a float artifact, on every
    :data:`EMULATED_FLOAT_STRIDE`-th photo (fp16 and bf16 on arm64: every photo). A class whose runtime cannot
    compile the artifact is recorded as unsupported (``cpu_classes_unsupported``), not as a failure.

    An accuracy-aware artifact was chosen to meet ``accuracy_target`` on the tuning split; whether it holds on
    these images too is recorded (``accuracy_target``, and per emulated class), beside the floor it is gated on.
    ``progress`` hears how far each run is, with the time left, when a run takes long."""
    checker = None
    if fmt.suffix == ".onnx":  # valid ONNX, as stricter consumers than ONNX Runtime need (ort: before conversion)
        from hubedge.exporter.formats.onnx import full_check

        checker = full_check(artifact)
    device = verification_device(fmt)
    simulator = status(fmt.runtime, device).simulated  # the HTP simulator: one child per core, far sooner done
    outputs, note, cpu = predict_isolated(artifact, device, images.images, one_core_each=simulator,
                                          on_done=Progress(progress, f"verifying on the {device}",
                                                           len(images.images)).update)
    figures = agreement_with_reference(reference_outputs, outputs, info)
    shortfalls = floor.shortfalls(figures)
    if target is not None:  # a goal not yet gated: recorded with what it misses, never hidden
        target_record = {"top1": target.top1, "top5": target.top5, "top1_margin": target.top1_margin,
                         "missed": target.failures(figures)}
    classes: dict[str, Any] = {cpu.get("class", "?"): {"cpu": cpu, "emulated": False, "passed": not shortfalls}}
    # a .tflite file is also run as a phone app runs it (exporter.verify.mobile_sdk)
    mobile = (mobile_sdk.verify_on_sdk(artifact, info, precision, images.images, images.photos, outputs,
                                       reference_outputs, floor)
              if fmt.name == "tflite" else None)
    shortfalls += [Shortfall(**short) for short in mobile["shortfalls"]] if mobile else []
    unchecked: dict[str, str] = {}
    unsupported: dict[str, str] = {}  # claimed classes whose runtime cannot compile the artifact: not on them
    if device == "cpu" and verify_cpu != "native" and fmt.runtime != "tf":  # the TF reference is FP32 by definition
        asked = cpu_emulation.classes_to_verify(verify_cpu)
        for other in (c for c in right_on if c not in classes):
            if other not in asked:
                unchecked[other] = f"not checked (--verify-cpu {verify_cpu})"
                continue
            emulator = cpu_emulation.emulator_for(other)
            if isinstance(emulator, str):
                unchecked[other] = emulator
                continue
            photos, photo_references = images.photos_only(reference_outputs)
            if precision == "fp32" or (precision in FLOAT_PRECISIONS and other not in ARM64_CLASSES):
                photos, photo_references = photos[::EMULATED_FLOAT_STRIDE], photo_references[::EMULATED_FLOAT_STRIDE]
            try:  # the emulator runs a child on one core whatever the runtime's threads: one child per core
                other_outputs, _, other_cpu = predict_isolated(
                    artifact, device, photos, emulator, one_core_each=True,
                    on_done=Progress(progress, f"verifying as {other}", len(photos)).update)
            except CannotCompileError as error:
                unsupported[other] = f"not supported: {error}"
                continue
            other_figures = agreement_with_reference(photo_references, other_outputs, info)
            other_shortfalls = floor.shortfalls(other_figures, where=f"as {other} ({emulator.description})")
            shortfalls += other_shortfalls
            classes[other] = {"cpu": other_cpu, "emulated": emulator.description, "passed": not other_shortfalls,
                              "images": len(photos),
                              **({"accuracy_target_missed": _target_missed(accuracy_target, other_figures)}
                                 if accuracy_target is not None else {}),
                              **{key: other_figures[key] for key in SUMMARY_KEYS if key in other_figures}}
    else:
        why = {"native": "not checked (--verify-cpu native)"}.get(verify_cpu, f"not emulated: verified on the {device}")
        if fmt.runtime == "tf":
            why = "not emulated: the TF reference is FP32 on every CPU"
        unchecked.update({c: why for c in right_on if c not in classes})
    held = {} if accuracy_target is None else {"accuracy_target": {
        "target": accuracy_target.spec, "missed": _target_missed(accuracy_target, figures)}}
    invalid = [f"not valid ONNX ({checker['message']})"] if checker and not checker["passed"] else []
    return {"passed": not shortfalls and not invalid, "floor": dataclasses.asdict(floor), **held,
            "failures": invalid + [short.message for short in shortfalls],
            **({"onnx_checker": checker} if checker else {}),
            "shortfalls": [dataclasses.asdict(short) for short in shortfalls],
            **({"target": target_record} if target is not None else {}),
            "image_set": images.description, "images": len(images.images), "runtime": fmt.runtime,
            "device": device, **({"device_note": note} if note else {}), "cpu": cpu,
            "cpu_classes": classes, "cpu_classes_unchecked": unchecked,
            **({"cpu_classes_unsupported": unsupported} if unsupported else {}),
            **({"mobile_sdk": mobile} if mobile else {}), **figures}


def _target_missed(target: AccuracyTarget, figures: dict[str, float]) -> list[str]:
    return [f"{name} {value:.4g} < {limit:g}" for name, value, limit in target.missed(figures)]


def verified_cpu_line(verification: dict[str, Any]) -> str:
    """One phrase for the export summary: where an artifact was verified and where it was not."""
    done = [f"{name}{' (emulated)' if run.get('emulated') else ''}"
            for name, run in verification.get("cpu_classes", {}).items()]
    line = "verified on " + ", ".join(done) if done else ""
    unchecked = verification.get("cpu_classes_unchecked", {})
    if unchecked:
        line += "; not checked on " + ", ".join(unchecked)
    unsupported = verification.get("cpu_classes_unsupported", {})
    if unsupported:
        line += "; cannot run on " + ", ".join(unsupported)
    return line


def record_reference(output_dir: Path, loaded: LoadedModel, images: EvaluationSet,
                     outputs: np.ndarray, reused_from: str | None = None) -> dict[str, Any]:
    """Writes the FP32 reference outputs beside the artifacts, once per model and weights
    (``hubedge.runtimes.reference``), and returns the manifest's record of them. An existing file with other bytes
    (another export's reference: other weights under one name, or outputs computed on another CPU) is left as it is, so
    that the manifests naming it stay valid, and these outputs get a name of their own (their sha256 in it).
    ``reused_from``: the manifest whose recorded outputs a catalog job reused
    (``hubedge.exporter.verify.shared_reference``)."""
    import io

    def write(path: Path, array: np.ndarray) -> dict[str, str]:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        content = buffer.getvalue()
        digest = hashlib.sha256(content).hexdigest()
        if path.is_file() and path.read_bytes() != content:  # another export's outputs: theirs stay valid
            path = path.with_name(path.name.replace(stem, f"{stem}.{digest[:12]}", 1))
        if not path.is_file() or path.read_bytes() != content:
            with atomic_path(path) as temp:
                temp.write_bytes(content)
        return {"file": path.name, "sha256": digest}

    stem = f"{loaded.info.name}.{loaded.weights_record()['sha256'][:12]}"
    record = write(output_dir / f"{stem}{reference.SUFFIX}", outputs.astype(np.float32))
    pixels = reference.to_pixels(images.images)  # the batch as the uint8 pixels it was made from
    if pixels is not None:
        record["inputs"] = write(output_dir / f"{stem}{reference.INPUTS_SUFFIX}", pixels)
    return {**record, "images": len(outputs), "input_sha256": reference.batch_sha256(images.images),
            "image_set": images.description, "photos": [photo.name for photo in images.photos],
            "computed_by": "the TensorFlow FP32 module as loaded (the verification reference)",
            **({"reused_from": reused_from} if reused_from else {})}


def export_one(loaded: LoadedModel, fmt: Format, precision: str, output_dir: Path, verify_output: bool = True,
               reference_outputs: np.ndarray | None = None, options: ExportOptions | None = None,
               work: Workspace | None = None, progress: Callable[[str], None] | None = None,
               job: dict[str, Any] | None = None, reference_from: str | None = None) -> ExportResult:
    """Exports ``loaded`` to one format and precision under ``output_dir``.

    ``options`` may set only what ``fmt`` takes at ``precision`` (its row in the formats table; anything else
    is refused before work starts); ``options.graph`` is used when ``loaded`` has no graph route yet
    (``hubedge.exporter.graph.reauthor``). ``work`` is shared by the exports of one run (default: a fresh one). Plain
    int8 that misses its floor falls back to an accuracy-aware search for the floor
    (``hubedge.exporter.verify.fallback``) unless ``options.int8_fallback`` is ``none``; ``progress`` hears of it.
    ``job``: a catalog run's record of this job (``hubedge.exporter.zoo``), kept in the manifest so that a re-run can
    tell an up-to-date artifact; ``reference_from``: the manifest whose recorded outputs ``reference_outputs`` are, when
    a catalog job reused them.
    """
    options = options if options is not None else ExportOptions()
    fmt.refuse_options(precision, options)
    if options.accuracy_target is not None:
        from hubedge.exporter.quantize.accuracy import check_target

        check_target(options.accuracy_target, loaded.info)
    if loaded.graph is None:  # the graph route: a recognised BiT is re-authored unless graph="as-is"
        loaded = choose_graph(loaded, options.graph)
    work = work if work is not None else Workspace.for_model(loaded.info.input_size, options)
    ensure_writable_dir(output_dir)
    variant = ACCURACY_VARIANT if options.accuracy_target is not None else ""
    final = output_dir / fmt.artifact_name(loaded.info.name, precision, variant)
    started = time.perf_counter()
    with atomic_path(final, directory=fmt.is_directory, companions=fmt.companions,
                     optional=fmt.optional_companions) as temp:
        manifest, info = _convert(loaded, fmt, precision, temp, options, work, started)
        if verify_output:
            images = evaluation_set(loaded.info.input_size)
            if reference_outputs is None:
                reference_outputs = compute_reference(loaded, images.images, progress)
            source = loaded.weights.get("source", "")
            floor = floor_for(fmt, precision, source)

            def verified(options: ExportOptions) -> dict[str, Any]:
                try:
                    return verify(temp, fmt, precision, reference_outputs, images, info, floor,
                                  yardstick_target(precision, source), tuple(manifest["cpu_classes"]["right_on"]),
                                  options.verify_cpu, options.accuracy_target, progress)
                except RuntimeCrashed as crash:
                    raise RuntimeCrashed(f"{crash}; {final.name} was not written") from None

            verification = verified(options)
            # a search keeps layers float for accuracy: it cannot mend a file that is not valid ONNX
            if verification["shortfalls"] and verification.get("onnx_checker", {}).get("passed", True) \
                    and _falls_back(fmt, precision, options):
                manifest, info, verification = _fall_back(loaded, fmt, precision, temp, options, work, manifest,
                                                          info, verification, floor, verified, progress)
            manifest["verification"] = verification
            _settle_cpu_classes(manifest["cpu_classes"], verification)
            if not verification["passed"]:
                raise VerificationFailed(
                    f"{final.name} FAILED verification ({'; '.join(verification['failures'])}); not written",
                    [Shortfall(**short) for short in verification["shortfalls"]], verification)
            manifest["reference"] = record_reference(output_dir, loaded, images, reference_outputs, reference_from)
        else:
            _settle_cpu_classes(manifest["cpu_classes"], {})
            manifest["reference"] = {"skipped": "exported with --no-verify: no reference was computed"}
        manifest["deployability"] = deployability.report(temp, fmt.name, fmt.runtime,
                                                         manifest["artifact"]["size_bytes"])
        if options.require_offload and fmt.name in deployability.OFFLOAD_TARGETS[options.require_offload]:
            if why := deployability.offload_shortfall(options.require_offload, manifest["deployability"]):
                raise deployability.OffloadRefused(f"{final.name} refused by --require-offload "
                                                   f"{options.require_offload}: {why}; not written")
        if job is not None:
            manifest["job"] = job
        manifest_path(temp).unlink()
        final_manifest = manifest_path(final)
        final_manifest.unlink(missing_ok=True)  # an old manifest must never describe the new artifact
    with atomic_path(final_manifest) as temp_file:
        write_manifest(temp_file, manifest)
    return ExportResult(final, fmt.name, precision, manifest["artifact"]["size_bytes"], manifest["export_seconds"],
                        manifest["export_peak_rss_mb"],
                        manifest["verification"], manifest["quantization"], manifest["deployability"])


def _settle_cpu_classes(cpu_classes: dict[str, Any], verification: dict[str, Any]) -> None:
    """``right_on`` keeps what verification allows: a class the recipe claimed but whose runtime could not compile
    the artifact there goes to ``not_on`` with the runtime's reason (the artifact is good where it was verified,
    and says where it is not), and so does an ``unproven`` class that was not run here."""
    not_on = {**cpu_classes.get("not_on", {}), **verification.get("cpu_classes_unsupported", {})}
    ran = verification.get("cpu_classes", {})
    for name, why in cpu_classes.pop("unproven", {}).items():
        if name not in ran and name not in not_on:
            not_on[name] = (f"not claimed unverified: {why}; exported with --verify-cpu {name} (or all), it is "
                            "checked there")
    if not_on:
        cpu_classes["right_on"] = [c for c in cpu_classes["right_on"] if c not in not_on]
        cpu_classes["not_on"] = not_on


def _convert(loaded: LoadedModel, fmt: Format, precision: str, temp: Path, options: ExportOptions, work: Workspace,
             started: float) -> tuple[dict[str, Any], ModelInfo]:
    """Runs the format's converter into ``temp`` and writes its manifest beside it, unverified as yet."""
    with PeakMemory() as peak:
        result = fmt.exporter().export(loaded, precision, temp, options, work)
    seconds = time.perf_counter() - started
    manifest = build_manifest(loaded, fmt, precision, temp, result, seconds)
    manifest["export_peak_rss_mb"] = round(max(peak.bytes, result.child_peak_rss_bytes) / 2**20)
    manifest["verification"] = {"skipped": "--no-verify"}
    write_manifest(manifest_path(temp), manifest)
    return manifest, result.info or loaded.info


def _falls_back(fmt: Format, precision: str, options: ExportOptions) -> bool:
    """Plain int8 of a format with an accuracy-aware route, where the caller did not forbid the fallback."""
    return (precision == "int8" and options.accuracy_target is None and options.int8_fallback == "search"
            and fmt.takes("accuracy_target", precision))


def _fall_back(loaded: LoadedModel, fmt: Format, precision: str, temp: Path, options: ExportOptions, work: Workspace,
               plain_manifest: dict[str, Any], info: ModelInfo, plain: dict[str, Any], floor: Floor, verified,
               progress: Callable[[str], None] | None) -> tuple[dict[str, Any], ModelInfo, dict[str, Any]]:
    """Plain int8 at ``temp`` missed ``floor``: exports the fewest layers float that meet it
    (``hubedge.exporter.verify.fallback``) over ``temp`` and verifies that. Returns its manifest, contract and
    verification; raises :class:`VerificationFailed` naming both trials where no artifact within the search's limit
    meets the floor."""
    from hubedge.exporter.quantize.accuracy import TargetUnreachable, figures_of, tuning_split
    from hubedge.exporter.verify.fallback import fallback_record, floor_target

    say = progress or (lambda _: None)
    missed = "; ".join(plain["failures"])
    split = tuning_split(loaded, options, work)
    plain_outputs, _, _ = predict_isolated(temp, verification_device(fmt), split.images)
    plain_tuning = figures_of(split, plain_outputs, info)
    target = floor_target(floor, plain, plain_tuning)
    say(f"  {fmt.name} {precision}: plain int8 missed its floor ({missed}); searching for the fewest layers to keep "
        f"float that meet {target.spec} on the tuning split (--int8-fallback none: fail instead) …")
    started = time.perf_counter()
    try:
        manifest, info = _convert(loaded, fmt, precision, temp, dataclasses.replace(options, accuracy_target=target),
                                  work, started)
    except (TargetUnreachable, UnsupportedError) as error:
        why = ("the fallback found no int8 artifact that meets the floor" if isinstance(error, TargetUnreachable)
               else "it cannot fall back to keeping layers float")
        raise VerificationFailed(f"{temp.name} FAILED verification ({missed}), and {why}: {error}; not written",
                                 [Shortfall(**short) for short in plain["shortfalls"]], plain) from None
    manifest.pop("variant", None)  # the int8 artifact of its name: bench pairs no plain partner with it
    manifest["export_seconds"] = round(plain_manifest["export_seconds"] + manifest["export_seconds"], 3)
    manifest["export_peak_rss_mb"] = max(plain_manifest["export_peak_rss_mb"], manifest["export_peak_rss_mb"])
    manifest["quantization"]["int8_fallback"] = fallback_record(plain, plain_manifest["quantization"],
                                                                plain_manifest["export_seconds"], plain_tuning, target)
    try:
        verification = verified(dataclasses.replace(options, accuracy_target=target))
    except HubedgeError as error:  # e.g. the NPU cannot finalize the fallback's graph
        raise VerificationFailed(f"{temp.name} FAILED verification ({missed}), and the fallback's artifact, which "
                                 f"met {target.spec} on the tuning split, could not be verified: {error}; not written",
                                 [Shortfall(**short) for short in plain["shortfalls"]], plain) from None
    if not verification["passed"]:
        verification["failures"] = [f"plain int8: {missed}; after the fallback: {'; '.join(verification['failures'])}"]
    return manifest, info, verification
