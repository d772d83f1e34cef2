"""The mobile-facing check of export verification: a ``.tflite`` artifact run through MediaPipe Tasks' own API.

What a phone app does with the file is what counts: MediaPipe Tasks (the SDK Android, iOS and web apps load
models with) reads the standard TFLite Metadata, preprocesses the image itself and reports scores. Two runs:

- **hubedge's preprocessing** (gated): the evaluation images as the uint8 pixels hubedge made (centre square
  crop, antialiased bilinear resize) go to ``ImageClassifier`` / ``ImageEmbedder``. What it reports must meet
  the artifact's own verification floor against the FP32 reference, and, where the precision's arithmetic is
  fixed (:data:`EXACT_PRECISIONS`), equal hubedge's scores (|Δ| ≤ :data:`SCORE_TOLERANCE`) or features
  (cosine ≥ :data:`EMBEDDING_COSINE`). This proves the metadata (normalisation, labels, sigmoid calibration,
  softmax in the graph, uint8 input scale) says what the model computes. Dynamic-range kernels quantize
  activations on the fly in ways that differ between TFLite builds (MediaPipe's, LiteRT's XNNPACK and its
  built-in kernels all differ, by up to 0.03 in EfficientNet-Lite0's probabilities), so for ``dynamic`` the
  difference from hubedge is reported, not gated.
- **the SDK's own preprocessing** (reported, never gated): the whole photo, which MediaPipe stretches to the
  model's square without cropping, and the photo with a centre-square ``region_of_interest`` (what an app
  should pass to crop the way hubedge verified). Their agreement with the first run says what an app that
  skips the crop gives up.

MediaPipe runs in a child process (``python -m hubedge.exporter.verify.mobile_sdk``), like every other runtime in
verification, so a crash in its C++ fails the export cleanly; the child blocks TensorFlow, as on a phone
(``docs/stack-facts.md``, "Mobile SDKs and TFLite Metadata").
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.formats import Floor, Shortfall
from hubedge.runtimes.agreement import SUMMARY_KEYS, agreement_with_reference, cosines, top1_match, topk_overlap
from hubedge.runtimes.base import activate
from hubedge.runtimes.modelinfo import ModelInfo

__all__ = ["EMBEDDING_COSINE", "EXACT_PRECISIONS", "SCORE_TOLERANCE", "SDK", "VIEWS", "check", "main",
    "summary_line", "unsupported_reason", "verify_on_sdk"]

SDK = "mediapipe"
SCORE_TOLERANCE = 1e-4  # MediaPipe's scores against hubedge's on the same pixels
EMBEDDING_COSINE = 0.99999
EXACT_PRECISIONS = ("fp32", "fp16", "int8")  # the same arithmetic in every TFLite build
VIEWS = ("pixels", "stretch", "centre_roi")  # hubedge's pixels; the SDK's stretch; the SDK with a centre crop


def unsupported_reason(manifest: dict[str, Any]) -> str:
    """Why MediaPipe Tasks cannot take an artifact at all ('' when it can): it feeds UINT8 or FLOAT32 input."""
    dtype = manifest.get("input", {}).get("quantization", {}).get("dtype", "float32")
    if dtype not in ("float32", "uint8"):
        return (f"MediaPipe Tasks takes uint8 or float32 input, not {dtype}: export with --int8-io uint8 "
                "(raw camera pixels in) for mobile apps")
    return ""


def verify_on_sdk(artifact: Path, info: ModelInfo, precision: str, images: np.ndarray, photos: Sequence[Path],
                  outputs: np.ndarray, reference: np.ndarray, floor: Floor) -> dict[str, Any]:
    """The manifest's ``mobile_sdk`` record for a .tflite artifact verified on ``images`` (the evaluation set:
    each of ``photos`` first, then its crops), with hubedge's ``outputs``, the FP32 ``reference`` logits and
    the artifact's ``floor``; ``skipped`` says why it was not run, and is printed with the export."""
    from hubedge.runtimes.manifest import read_manifest
    from hubedge.runtimes.reference import to_pixels

    reason = unsupported_reason(read_manifest(artifact))
    pixels = to_pixels(images)
    if not reason and pixels is None:
        reason = "the evaluation images are not whole pixel values"
    if reason:
        return {"sdk": SDK, "skipped": reason, "passed": True, "failures": [], "shortfalls": []}
    photos = list(photos)
    stride = len(images) // len(photos)
    return check(artifact, info, pixels, outputs, photos, list(range(0, stride * len(photos), stride)),
                 (reference, floor), exact=precision in EXACT_PRECISIONS)


def check(artifact: Path, info: ModelInfo, pixels: np.ndarray, outputs: np.ndarray, photos: list[Path],
          photo_rows: list[int], judged: tuple[np.ndarray, Floor] | None = None, exact: bool = True) -> dict[str, Any]:
    """Runs ``artifact`` through MediaPipe Tasks and compares with hubedge's ``outputs`` on the same images.

    ``pixels``: the evaluation batch as uint8 HWC images; ``outputs``: hubedge's outputs for it;
    ``photos``: the original photo files, whose hubedge-preprocessed rows in the batch are ``photo_rows``;
    ``judged``: the FP32 reference logits and the floor MediaPipe's outputs must meet against them; ``exact``:
    whether MediaPipe must also equal hubedge. Returns the record for the manifest, with ``passed``."""
    with tempfile.TemporaryDirectory(prefix="hubedge-mediapipe-") as work:
        folder = Path(work)
        np.save(folder / "input_pixels.npy", pixels)
        (folder / "request.json").write_text(json.dumps({"task": info.task, "num_outputs": info.num_outputs,
                                                         "photos": [str(p) for p in photos]}))
        done = subprocess.run([sys.executable, "-m", "hubedge.exporter.verify.mobile_sdk", str(artifact), work],
                              capture_output=True, text=True, errors="replace")
        report_file = folder / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        if done.returncode != 0 or "error" in report:
            said = report.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            cannot = Shortfall("runs", 0.0, 1.0, "MediaPipe Tasks", f"could not run {artifact.name}: {said}")
            return {"sdk": SDK, "passed": False, "failures": [cannot.message], "shortfalls": [dataclasses.asdict(cannot)]}
        views = {view: np.load(folder / f"{view}.npy") for view in VIEWS}
    # what MediaPipe should report: the sigmoid its score calibration applies, or the outputs as they are
    ours = activate(outputs, "sigmoid") if info.pending_activation == "sigmoid" else outputs
    record: dict[str, Any] = {"sdk": SDK, "version": report["version"], "task": report["task_api"],
                              "images": int(len(pixels)), "photos": len(photos)}
    if info.pending_activation == "softmax":
        record["note"] = ("MediaPipe reports raw logits as scores: this all-integer file has no softmax in its "
                          "graph, and metadata cannot express one")
    if info.task == "classification":
        diff = float(np.max(np.abs(views["pixels"] - ours)))
        top1 = top1_match(ours, views["pixels"])
        record["hubedge_preprocessing"] = {"max_abs_score_diff": diff, "top1": top1,
                                           "top5": topk_overlap(ours, views["pixels"], 5)}
        # within the tolerance everywhere, top-1 can differ only where hubedge's own top two are that close
        shortfalls = [Shortfall("max_abs_score_diff", diff, SCORE_TOLERANCE, "MediaPipe against hubedge")] * (
            exact and diff > SCORE_TOLERANCE)
    else:
        cosine = float(cosines(ours, views["pixels"]).min())
        record["hubedge_preprocessing"] = {"cosine_min": cosine}
        shortfalls = [Shortfall("cosine_min", cosine, EMBEDDING_COSINE, "MediaPipe against hubedge")] * (
            exact and cosine < EMBEDDING_COSINE)
    record["hubedge_preprocessing"]["gated"] = "equal to hubedge" if exact else "the floor only"
    if judged is not None:
        reference, floor = judged
        figures = agreement_with_reference(reference, _as_outputs(views["pixels"], info), info)
        record["against_reference"] = {key: figures[key] for key in SUMMARY_KEYS if key in figures}
        shortfalls += floor.shortfalls(figures, where="through MediaPipe")
    record["sdk_preprocessing"] = {view: _agreement(ours[photo_rows], views[view], info.task)
                                   for view in ("stretch", "centre_roi")}
    return {**record, "passed": not shortfalls, "failures": [short.message for short in shortfalls],
            "shortfalls": [dataclasses.asdict(short) for short in shortfalls]}


def _as_outputs(scores: np.ndarray, info: ModelInfo) -> np.ndarray:
    """MediaPipe's scores in the meaning of the artifact's own outputs: its sigmoid calibration undone into
    logits (scores that rounded to 0 or 1 in float32 stand at the nearest representable logit)."""
    if info.task != "classification" or info.pending_activation != "sigmoid":
        return scores
    p = np.clip(scores.astype(np.float64), np.finfo(np.float32).tiny, 1.0 - np.finfo(np.float32).eps)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _agreement(ours: np.ndarray, theirs: np.ndarray, task: str) -> dict[str, float]:
    """How the SDK's own preprocessing of the photos agrees with hubedge's preprocessing (same artifact)."""
    if task == "classification":
        return {"top1": top1_match(ours, theirs), "top5": topk_overlap(ours, theirs, 5),
                "max_abs_score_diff": float(np.max(np.abs(ours - theirs)))}
    return {"cosine_min": float(cosines(ours, theirs).min()), "cosine": float(cosines(ours, theirs).mean())}


def summary_line(record: dict[str, Any]) -> str:
    """One phrase for the export summary."""
    if "skipped" in record:
        return f"MediaPipe: not run ({record['skipped']})"
    stretch = record.get("sdk_preprocessing", {}).get("stretch", {})
    ours = record.get("hubedge_preprocessing", {})
    reported = "" if ours.get("gated") == "equal to hubedge" else " (kernels differ by build: reported)"
    if "top1" in ours:
        return (f"MediaPipe {record['task']}: |Δscore| {ours['max_abs_score_diff']:.1e}{reported}; "
                f"its own stretch preprocessing keeps top-1 on {stretch.get('top1', 0):.2f}")
    return f"MediaPipe {record['task']}: cosine {ours['cosine_min']:.6f}{reported}"


# --- the child: MediaPipe only, TensorFlow blocked, as on a phone ---

def _centre_square(width: int, height: int):
    from mediapipe.tasks.python.components.containers.rect import RectF

    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2  # the same square hubedge's resize_square crops
    return RectF(left=left / width, top=top / height, right=(left + side) / width, bottom=(top + side) / height)


def _run_sdk(artifact: str, folder: Path) -> dict[str, Any]:
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # MediaPipe only uses it when it is there
    import importlib.metadata

    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision.core.image_processing_options import ImageProcessingOptions

    from hubedge.runtimes.preprocess import load_image

    request = json.loads((folder / "request.json").read_text())
    size = request["num_outputs"]
    if request["task"] == "classification":
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=artifact), max_results=-1)
        task, api = vision.ImageClassifier.create_from_options(options), "ImageClassifier"

        def run(image, processing=None) -> np.ndarray:
            scores = np.zeros(size, np.float32)
            for category in task.classify(image, processing).classifications[0].categories:
                scores[category.index] = category.score
            return scores
    else:
        options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=artifact),
                                              l2_normalize=False, quantize=False)
        task, api = vision.ImageEmbedder.create_from_options(options), "ImageEmbedder"

        def run(image, processing=None) -> np.ndarray:
            return np.asarray(task.embed(image, processing).embeddings[0].embedding, np.float32)

    def image(array: np.ndarray):
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(array))

    with task:
        np.save(folder / "pixels.npy", np.stack([run(image(p)) for p in np.load(folder / "input_pixels.npy")]))
        photos = [np.asarray(load_image(path)) for path in request["photos"]]
        np.save(folder / "stretch.npy", np.stack([run(image(p)) for p in photos]))
        roi = [ImageProcessingOptions(region_of_interest=_centre_square(p.shape[1], p.shape[0])) for p in photos]
        np.save(folder / "centre_roi.npy", np.stack([run(image(p), r) for p, r in zip(photos, roi)]))
    return {"version": importlib.metadata.version("mediapipe"), "task_api": api}


def main(argv: list[str]) -> int:
    artifact, work = argv
    folder = Path(work)
    try:
        report = _run_sdk(artifact, folder)
    except Exception as error:  # noqa: BLE001 - any SDK refusal is the check's finding, reported in one line
        (folder / "report.json").write_text(json.dumps({"error": f"{type(error).__name__}: {str(error)[:300]}"}))
        return 2
    (folder / "report.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main(sys.argv[1:]))
