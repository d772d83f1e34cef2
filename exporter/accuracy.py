"""Accuracy-aware int8: the fewest layers kept float that meet an ``AccuracyTarget``, judged on a tuning split.

The tuning split is calibration-side: the calibration folder's photos (never the held-apart verification
photos) and deterministic crops and flips of them, with the FP32 module's outputs on them. A format ranks its
quantized layers by how much error each adds (its own tool: TFLite's QuantizationDebugger, ONNX Runtime's
``qdq_loss_debug``), and :func:`fewest_float_layers` finds the shortest prefix of that ranking that meets the
target: doubling, then bisecting, so a model with n layers costs about 2·log2(n) trials. OpenVINO leaves the
search to NNCF's ``quantize_with_accuracy_control`` with :func:`nncf_validation` as its metric. At most half
the quantized layers may stay float (:data:`MAX_FLOAT_SHARE`): beyond that the artifact is not an int8 one, and
the target is refused as unreachable, naming the best figures a trial reached.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from exporter.accuracy_target import AccuracyTarget
from exporter.calibration import augment, usable_images
from exporter.options import ExportOptions, Workspace
from exporter.sources import LoadedModel
from runtimes.agreement import agreement_with_reference
from runtimes.errors import HubedgeError, UnsupportedError
from runtimes.modelinfo import ModelInfo
from runtimes.preprocess import load_image, resize_square

__all__ = ["MAX_FLOAT_SHARE", "SearchResult", "TUNING_VIEWS", "TargetUnreachable", "TuningSplit", "check_target",
    "fewest_float_layers", "float_layer_limit", "nncf_validation", "tuning_split"]

TUNING_VIEWS = 4  # each calibration photo and 3 crops/flips of it (exporter.calibration.augment)
MAX_FLOAT_SHARE = 0.5
FIGURES = ("top1_margin", "top1", "top5", "cosine_min", "sqnr_db")  # what each trial records


class TargetUnreachable(HubedgeError):
    """No int8 artifact within the float-layer limit meets the target; nothing is written."""


@dataclasses.dataclass(frozen=True)
class TuningSplit:
    """Calibration-side images, the FP32 reference's outputs on them, and what they are."""

    images: np.ndarray
    reference: np.ndarray
    description: str


def tuning_split(loaded: LoadedModel, options: ExportOptions, work: Workspace) -> TuningSplit:
    """The split a target is met on, built once per run (``work.memo``): :data:`TUNING_VIEWS` views of every
    calibration photo at the model's input size, and the FP32 module's outputs on them."""
    size = loaded.info.input_size
    key = ("tuning", str(options.calibration_data), size, str(loaded.export_savedmodel))
    if key not in work.memo:
        source, files = usable_images(options.calibration_data)
        images = np.stack([resize_square(augment(load_image(path), view), size)
                           for path in files for view in range(TUNING_VIEWS)]).astype(np.float32) / np.float32(255)
        description = (f"tuning split: the {len(files)} calibration photos of {source} and {TUNING_VIEWS - 1} crops "
                       f"or flips of each ({len(images)} images; never the verification photos)")
        work.memo[key] = TuningSplit(images, loaded.reference().predict(images), description)
    return work.memo[key]


def check_target(target: AccuracyTarget, info: ModelInfo) -> None:
    """Refuses, before any work, a target on figures this model has none of (top-k of a feature vector)."""
    needs = target.needs_classes()
    if needs and info.task != "classification":
        raise UnsupportedError(f"--accuracy-target {target.spec}: {', '.join(needs)} exist only for classifiers, and "
                               f"{info.name} is a {info.task} model; use cosine_min or sqnr_db")


def float_layer_limit(quantized_layers: int) -> int:
    """How many of a model's quantized layers a search may keep float."""
    return math.floor(quantized_layers * MAX_FLOAT_SHARE)


def figures_of(split: TuningSplit, outputs: np.ndarray, info: ModelInfo) -> dict[str, float]:
    figures = agreement_with_reference(split.reference, outputs, info)
    return {key: figures[key] for key in FIGURES if key in figures}


@dataclasses.dataclass
class SearchResult:
    """The layers kept float, the figures they reached on the tuning split, and every trial on the way."""

    float_layers: list[str]
    figures: dict[str, float]
    trials: list[dict[str, Any]]

    def record(self, target: AccuracyTarget, split: TuningSplit, route: str, ranking: str,
               ranked: int, scores: dict[str, float] | None = None) -> dict[str, Any]:
        """The manifest's account of the search (``quantization.accuracy_aware``)."""
        return {
            "route": route, "target": target.spec, "met_on": split.description, "tuning_figures": self.figures,
            "ranking": ranking, "quantized_layers": ranked, "float_layer_limit": float_layer_limit(ranked),
            "float_layers": [{"name": name, **({"score": scores[name]} if scores and name in scores else {})}
                             for name in self.float_layers],
            "why_float": (f"kept float, costliest first by {ranking}, until the int8 artifact met {target.spec} on "
                          "the tuning split"),
            "trials": self.trials,
        }


def fewest_float_layers(ranked: Sequence[str], evaluate: Callable[[list[str]], dict[str, float]],
                        target: AccuracyTarget, split: TuningSplit, what: str) -> SearchResult:
    """The shortest prefix of ``ranked`` (costliest layers first) whose layers, kept float, make
    ``evaluate(prefix)`` meet ``target``. Tries no layers, then 1, 2, 4, … up to the limit, then bisects between
    the last prefix that missed and the first that met (agreement grows with the prefix on the whole, not
    strictly, so the answer is the shortest prefix found to meet it, not a proven minimum)."""
    from tqdm import tqdm

    limit = float_layer_limit(len(ranked))
    trials: list[dict[str, Any]] = []
    met: dict[int, dict[str, float]] = {}
    bar = tqdm(desc=f"{what}: accuracy search", unit="trial", disable=None, leave=False, file=sys.stderr)

    def trial(count: int) -> bool:
        figures = evaluate(list(ranked[:count]))
        trials.append({"float_layers": count, **figures, "met": target.met(figures)})
        bar.update(1)
        bar.set_postfix_str(f"{count} float: {target.describe(figures)}")
        if target.met(figures):
            met[count] = figures
        return target.met(figures)

    try:
        if trial(0):
            return SearchResult([], met[0], trials)
        missed, first_met = 0, None
        for count in sorted({*(2**i for i in range(limit.bit_length()) if 2**i <= limit), limit} - {0}):
            if trial(count):
                first_met = count
                break
            missed = count
        if first_met is None:
            best = max(trials, key=target.score)
            raise TargetUnreachable(
                f"no int8 artifact with at most {limit} of its {len(ranked)} quantized layers float meets "
                f"{target.spec} on the {split.description.split(':')[0]} ({len(split.images)} images): the best "
                f"trial reached {target.describe(best)} with {best['float_layers']} float; lower the target, or "
                "export fp16 or dynamic instead")
        while first_met - missed > 1:
            middle = (first_met + missed) // 2
            if trial(middle):
                first_met = middle
            else:
                missed = middle
        return SearchResult(list(ranked[:first_met]), met[first_met], trials)
    finally:
        bar.close()


def nncf_validation(split: TuningSplit, info: ModelInfo, target: AccuracyTarget) -> Callable[[Any, Any], tuple]:
    """NNCF's ``validation_fn`` for a tuning split whose data items are image indices: runs the compiled model on
    those images and returns ``target.score`` of their figures (at least 1 exactly when the target is met)."""

    def validate(compiled_model, items) -> tuple[float, None]:
        indices = np.fromiter((int(item) for item in items), dtype=np.int64)
        output = compiled_model.output(0)
        outputs = np.concatenate([compiled_model(split.images[i : i + 1])[output] for i in indices])
        subset = TuningSplit(split.images[indices], split.reference[indices], split.description)
        return target.score(figures_of(subset, outputs, info)), None

    return validate
