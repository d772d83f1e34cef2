"""Accuracy-aware int8: the fewest layers kept float that meet an ``AccuracyTarget``, judged on a tuning split.

The tuning split is calibration-side: the calibration folder's photos (never the held-apart verification
photos) and deterministic crops and flips of them, with the FP32 module's outputs on them. A format ranks its
quantized layers by how much error each adds (its own tool: TFLite's QuantizationDebugger, ONNX Runtime's
``qdq_loss_debug``), and :func:`fewest_float_layers` finds the shortest prefix of that ranking that meets the
target: doubling, then bisecting, so a model with n layers costs about 2·log2(n) trials. OpenVINO leaves the
search to NNCF's ``quantize_with_accuracy_control`` with :func:`nncf_validation` as its metric. At most half
the quantized layers may stay float (:data:`MAX_FLOAT_SHARE`): beyond that the artifact is not an int8 one, and
the target is refused as unreachable, naming the best figures a trial reached. The qnn route keeps nothing
float (the HTP would hand such a layer to the CPU): its search keeps activation tensors at 16 bits instead
(:data:`A16`), under the same limit.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.exporter.quantize.calibration import augment, usable_images
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.agreement import agreement_with_reference
from hubedge.runtimes.errors import HubedgeError, UnsupportedError
from hubedge.runtimes.modelinfo import ModelInfo
from hubedge.runtimes.preprocess import load_image, resize_square

__all__ = ["A16", "FLOAT", "Keeping", "MAX_FLOAT_SHARE", "PAIRED_RUNS", "SearchResult", "TUNING_VIEWS",
    "TargetUnreachable", "TuningSplit", "check_target",
    "fewest_float_layers", "float_layer_limit", "nncf_validation", "paired_speed", "tuning_split"]

TUNING_VIEWS = 4  # each calibration photo and 3 crops/flips of it (exporter.quantize.calibration.augment)
MAX_FLOAT_SHARE = 0.5
FIGURES = ("top1_margin", "top1", "top5", "cosine_min", "sqnr_db")  # what each trial records


@dataclasses.dataclass(frozen=True)
class Keeping:
    """What a search keeps out of int8, and the manifest keys that name it: layers kept float, or activation
    tensors kept at 16 bits (uint16; weights stay int8, a16w8)."""

    name: str  # "float", "a16"
    items: str  # "layers", "tensors"
    state: str  # how a kept item is, in a sentence: "float", "at 16 bits"

    @property
    def list_key(self) -> str:
        return f"{self.name}_{self.items}"

    @property
    def limit_key(self) -> str:
        return f"{self.name}_{self.items[:-1]}_limit"


FLOAT = Keeping("float", "layers", "float")
A16 = Keeping("a16", "tensors", "at 16 bits")


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
    """The layers kept float, the ranking they came from, the figures they reached on the tuning split, and
    every trial on the way."""

    float_layers: list[str]  # the items kept out of int8: float layers, or 16-bit tensors (``keeping``)
    ranking: str
    figures: dict[str, float]
    trials: list[dict[str, Any]]
    keeping: Keeping = FLOAT

    def record(self, target: AccuracyTarget, split: TuningSplit, route: str, rankings: dict[str, str],
               quantized_layers: int, scores: dict[str, float] | None = None) -> dict[str, Any]:
        """The manifest's account of the search (``quantization.accuracy_aware``); ``rankings``: name → how
        that ranking orders the layers. Keys name what was kept: ``float_layers`` or ``a16_tensors``."""
        keeping = self.keeping
        return {
            "route": route, "target": target.spec, "met_on": split.description, "tuning_figures": self.figures,
            "ranking": f"{self.ranking}: {rankings[self.ranking]}" if self.float_layers else "none needed",
            "rankings_tried": rankings, "kept": f"{keeping.items} {keeping.state}",
            f"quantized_{keeping.items}": quantized_layers, keeping.limit_key: float_layer_limit(quantized_layers),
            keeping.list_key: [{"name": name, **({"score": scores[name]} if scores and name in scores else {})}
                               for name in self.float_layers],
            f"why_{keeping.name}": (f"kept {keeping.state}, in the order of the {self.ranking} ranking, until the "
                                    f"int8 artifact met {target.spec} on the tuning split" if self.float_layers else
                                    "plain int8 already met the target on the tuning split"),
            "trials": self.trials,
        }


def fewest_float_layers(rankings: dict[str, Sequence[str]], evaluate: Callable[[list[str]], dict[str, float]],
                        target: AccuracyTarget, split: TuningSplit, what: str,
                        keeping: Keeping = FLOAT) -> SearchResult:
    """For each ranking (name → layers, the first to keep float first), the shortest prefix whose layers, kept
    float (or as ``keeping`` says), make ``evaluate(prefix)`` meet ``target``; returns the shortest of those.
    Each ranking tries 1, 2, 4, … layers up to the limit, then bisects between the last prefix that missed and
    the first that met (agreement grows with the prefix on the whole, not strictly, so the answer is the
    shortest prefix found to meet it, not a proven minimum). Plain int8 is tried first, once."""
    from tqdm import tqdm

    quantized_layers = max(len(layers) for layers in rankings.values())
    limit = float_layer_limit(quantized_layers)
    trials: list[dict[str, Any]] = []
    bar = tqdm(desc=f"{what}: accuracy search", unit="trial", disable=None, leave=False, file=sys.stderr)

    def trial(ranking: str, count: int) -> dict[str, float] | None:
        figures = evaluate(list(rankings[ranking][:count]))
        met = target.met(figures)
        trials.append({"ranking": ranking if count else "none", keeping.list_key: count, **figures, "met": met})
        bar.update(1)
        bar.set_postfix_str(f"{ranking} {count} {keeping.state}: {target.describe(figures)}")
        return figures if met else None

    def search(ranking: str) -> SearchResult | None:
        missed, first_met, figures = 0, 0, None
        for count in sorted({2**i for i in range(limit.bit_length())} | {limit}):
            figures = trial(ranking, count)
            if figures is not None:
                first_met = count
                break
            missed = count
        if figures is None:
            return None
        while first_met - missed > 1:
            middle = (first_met + missed) // 2
            if (found := trial(ranking, middle)) is not None:
                first_met, figures = middle, found
            else:
                missed = middle
        return SearchResult(list(rankings[ranking][:first_met]), ranking, figures, trials, keeping)

    try:
        plain = trial(next(iter(rankings)), 0)
        if plain is not None:
            return SearchResult([], next(iter(rankings)), plain, trials, keeping)
        found = [result for result in (search(name) for name in rankings if limit >= 1) if result is not None]
        if not found:
            best = max(trials, key=target.score)
            raise TargetUnreachable(
                f"no int8 artifact with at most {limit} of its {quantized_layers} quantized {keeping.items} "
                f"{keeping.state} meets {target.spec} on the {split.description.split(':')[0]} "
                f"({len(split.images)} images): the best trial reached {target.describe(best)} with "
                f"{best[keeping.list_key]} {keeping.state}; lower the target, or export fp16 or dynamic instead")
        return min(found, key=lambda result: len(result.float_layers))
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


PAIRED_RUNS = 20  # timed calls of each artifact, interleaved, after 3 warm-up calls each


def paired_speed(plain: Callable[[], Any], accuracy_aware: Callable[[], Any]) -> dict[str, Any]:
    """The accuracy-aware artifact's batch-1 latency against plain int8's, timed interleaved in one run on this
    CPU (so drift and thermal state hit both alike): medians and their ratio. A quick figure for the export
    summary; ``hubedge bench`` measures both artifacts properly."""
    import statistics
    import time

    for _ in range(3):
        plain(), accuracy_aware()
    times: dict[str, list[float]] = {"plain": [], "accuracy_aware": []}
    for run in range(PAIRED_RUNS):
        order = (("plain", plain), ("accuracy_aware", accuracy_aware))
        for name, call in order if run % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1e3)
    plain_ms, aware_ms = statistics.median(times["plain"]), statistics.median(times["accuracy_aware"])
    return {"plain_int8_p50_ms": round(plain_ms, 3), "accuracy_aware_p50_ms": round(aware_ms, 3),
            "ratio": round(aware_ms / plain_ms, 3), "runs": PAIRED_RUNS,
            "measured": "at export, batch 1, interleaved, this CPU's default threads"}
