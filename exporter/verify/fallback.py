"""int8 that misses its floor: the floor as an accuracy target, and the record of both trials.

Plain int8 is exported and verified first. When it misses its precision's floor on the verification images
(and ``ExportOptions.int8_fallback`` is ``search``), the format's accuracy-aware route
(``hubedge.exporter.quantize.accuracy``) keeps the fewest layers float that meet the floor, and the result is verified
the normal way and written under the plain int8 name. The search is judged on the calibration-side tuning split, never
on the verification images, and a recipe's figures differ between the two: plain int8's own error ratio between them
carries each term of the floor over to the tuning split (:func:`floor_target`), so that a search that closes the
distance there has closed it where the floor is judged too. The manifest keeps both trials: plain int8's verification
under ``quantization.int8_fallback.plain``, the search's trials under ``quantization.accuracy_aware``.
"""

from __future__ import annotations

import math
from typing import Any

from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.exporter.formats import Floor

__all__ = ["FLOOR_TERMS", "fallback_line", "fallback_record", "floor_target"]

# the floor's fields that are accuracy-target terms (a floor's max_abs_diff is an fp32 check, never int8's)
FLOOR_TERMS = {"cosine": "cosine_min", "top1": "top1", "top5": "top5", "top1_margin": "top1_margin"}


def floor_target(floor: Floor, plain_verification: dict[str, Any], plain_tuning: dict[str, float]) -> AccuracyTarget:
    """The floor's terms (those the model has figures for and the floor sets), each carried over to the tuning
    split by plain int8's own error ratio between the two sets: a figure's error is 1 minus it, and the target's
    error on the tuning split is the floor's error times plain's tuning error over its verification error. Plain
    BiT int8 scored cosine_min 0.891 on the tuning split and 0.779 on the verification images (error 0.109 vs
    0.221), so the floor 0.9 asks 0.951 there. An additive gap asked 1.012, out of reach: keeping layers float
    shrinks the gap with the error. Never below the floor itself (where the tuning split is the harder set)."""
    limits = []
    for field, metric in FLOOR_TERMS.items():
        limit = getattr(floor, field)
        if limit <= 0 or metric not in plain_verification:
            continue
        tuning_error = 1.0 - plain_tuning.get(metric, math.nan)
        verification_error = 1.0 - plain_verification[metric]
        carried = 1.0 - (1.0 - limit) * tuning_error / verification_error if verification_error > 0 else limit
        limits.append((metric, round(min(1.0, max(limit, carried)), 4) if math.isfinite(carried) else limit))
    return AccuracyTarget(tuple(limits))


def fallback_record(plain_verification: dict[str, Any], plain_recipe: dict[str, Any], plain_seconds: float,
                    plain_tuning: dict[str, float], target: AccuracyTarget) -> dict[str, Any]:
    """The manifest's ``quantization.int8_fallback``: why the search ran, plain int8's trial, and its target."""
    figures = ("cosine_min", "cosine", "sqnr_db", "top1", "top5", "top1_margin", "max_abs_diff")
    return {
        "why": "plain int8 missed its floor on the verification images: " + "; ".join(plain_verification["failures"]),
        "plain": {"verification": {key: plain_verification[key] for key in figures if key in plain_verification},
                  "images": plain_verification["images"], "failures": plain_verification["failures"],
                  "tuning_figures": plain_tuning, "quantization": plain_recipe, "export_seconds": round(plain_seconds, 1)},
        "target": target.spec,
        "target_from": "the floor, each term's error (1 - figure) scaled by plain int8's error on the tuning split "
                       "over its error on the verification images",
    }


def fallback_line(fmt: str, precision: str, quantization: dict[str, Any], verification: dict[str, Any]) -> str:
    """One line for the export summary, e.g. ``tflite int8: plain missed the floor (cosine_min 0.779 < 0.9); 21 of
    103 kept float → 0.962, 1.33× plain's latency at export``; empty where no fallback ran."""
    fallback, search = quantization.get("int8_fallback"), quantization.get("accuracy_aware", {})
    if not fallback:
        return ""
    plain = "; ".join(fallback["plain"]["failures"])
    kept_key, items = ("a16_tensors", "tensors") if "a16_tensors" in search else ("float_layers", "layers")
    kept = f"{len(search.get(kept_key, []))} of {search.get(f'quantized_{items}', '?')} " \
           f"{search.get('kept', items + ' float')}"
    speed = search.get("speed_vs_plain_int8", {})
    cost = f", {speed['ratio']:.2f}× plain's latency at export" if "ratio" in speed else ""
    return f"{fmt} {precision}: plain missed the floor ({plain}); {kept} → cosine_min " \
           f"{verification['cosine_min']:.3f}{cost}"
