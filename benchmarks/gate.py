"""The CI gate: compare a benchmark run with a saved baseline, by ratios to each run's own reference (the TF
reference, or in ``recorded`` mode the reference artifact each row was paired with; modes are never mixed).

A CI machine slower or faster than the one that saved the baseline moves every row and its reference
alike, so a row regresses only when its latency *relative to the reference of its own run* grows by more
than ``max_slowdown``, when it no longer runs where it ran, or when its agreement falls below a floor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.report import reference_rows, relative_latency
from runtimes.errors import HubedgeError

Key = tuple[str, str, str, str, str]


@dataclasses.dataclass(frozen=True)
class GateOptions:
    max_slowdown: float = 0.10
    min_top1: float | None = None
    min_cosine: float | None = None


def _key(row: dict[str, Any]) -> Key:
    return (row["model"], row["format"], row["precision"], row["runtime"], row["device"])


def _relative_p50(report: dict[str, Any]) -> dict[Key, float]:
    """Each measured row's latency over its reference row in the same report (paired when timed so)."""
    references = reference_rows(report)
    return {_key(row): relative_latency(row, references[(row["artifact"], row["device"])]) for row in report["rows"]
            if row["status"] == "ok" and not row.get("reference") and (row["artifact"], row["device"]) in references}


def check_modes(current: dict[str, Any], baseline: dict[str, Any]) -> None:
    """Ratios to a TF reference and ratios to a reference artifact are different figures: never compared."""
    now, before = current.get("reference_mode", "tf"), baseline.get("reference_mode", "tf")
    if now != before:
        raise HubedgeError(f"the baseline was taken with --reference-mode {before} and this run used {now}; its ratios "
                           f"are to another reference, so they cannot be compared: save a baseline in {now} mode")


def _name(key: Key) -> str:
    model, fmt, precision, runtime, device = key
    return f"{model} {fmt} {precision} on {runtime}/{device}"


def compare(current: dict[str, Any], baseline: dict[str, Any], options: GateOptions) -> list[str]:
    """Readable regressions of ``current`` against ``baseline``; empty when the run passes."""
    check_modes(current, baseline)
    against = "the TF reference" if current.get("reference_mode", "tf") == "tf" else "its reference artifact"
    problems = []
    now, before = _relative_p50(current), _relative_p50(baseline)
    rows_now = {_key(row): row for row in current["rows"] if not row.get("reference")}
    for key, ratio_before in before.items():
        row = rows_now.get(key)
        if row is None:
            problems.append(f"{_name(key)}: in the baseline, missing from this run")
        elif row["status"] != "ok":
            problems.append(f"{_name(key)}: ran in the baseline, now {row['status']}: {row.get('reason', '')}")
        elif now[key] > ratio_before * (1.0 + options.max_slowdown):
            slower = now[key] / ratio_before - 1.0
            problems.append(
                f"{_name(key)}: {slower:.0%} slower relative to {against} (p50 {ratio_before:.3f}× → "
                f"{now[key]:.3f}× of the reference's; allowed {options.max_slowdown:.0%})"
            )
    for key, row in rows_now.items():
        if row["status"] != "ok":
            continue
        agreement = row["agreement"]
        if options.min_top1 is not None and "top1" in agreement and agreement["top1"] < options.min_top1:
            problems.append(f"{_name(key)}: top-1 agreement {agreement['top1']:.3f} < {options.min_top1}")
        if options.min_cosine is not None and agreement["cosine_min"] < options.min_cosine:
            problems.append(f"{_name(key)}: cosine_min {agreement['cosine_min']:.5f} < {options.min_cosine}")
    return problems
