"""The CI gate: compare a benchmark run with a saved baseline, by ratios to each run's own reference (the TF
reference, or in ``recorded`` mode the reference artifact each row was paired with; modes are never mixed).

A CI machine slower or faster than the one that saved the baseline moves every row and its reference
alike, so a row regresses only when its latency *relative to the reference of its own run* grows by more
than ``max_slowdown``, when it no longer runs where it ran, or when its agreement falls below a floor.

With hundreds of rows on a noisy machine, a threshold alone fails some row on every run. So a slowdown past the
threshold counts only when it is also significant: the row's per-block ratios (each block of calls timed right
beside a block of its reference, ``hubedge.benchmarks.latency.paired_timing``) are compared with the baseline's by a
one-sided Mann-Whitney U test. Why that test: the two runs' blocks are independent samples with no pairing between
them (block 3 of today has nothing to do with block 3 of the baseline), so a sign test on pairs would be
arbitrary; the U test needs no normality, and with 6 blocks a side its exact p-value can go as low as 1/924.
A row that still fails is timed again once (``retime``), and the verdict is the second run's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from hubedge.benchmarks.report import place, reference_rows, relative_latency
from hubedge.runtimes.errors import HubedgeError

__all__ = ["SIGNIFICANCE_TEST", "GateOptions", "GateResult", "compare", "judge", "require_scipy"]

Key = tuple[str, str, str, str, str, str]
SIGNIFICANCE_TEST = "one-sided Mann-Whitney U test on the per-block ratios"


@dataclasses.dataclass(frozen=True)
class GateOptions:
    max_slowdown: float = 0.10
    min_top1: float | None = None
    min_cosine: float | None = None
    significance: float = 0.01  # a slowdown past max_slowdown fails only with a p-value below this


@dataclasses.dataclass(frozen=True)
class Finding:
    """One regression: ``slowdown`` ones are timed again once before the verdict."""

    key: Key
    artifact: str
    message: str
    slowdown: bool = False
    partner: str = ""  # recorded mode: the artifact the row's latency is paired with, timed again beside it


@dataclasses.dataclass
class GateResult:
    """The verdict: the regressions that stand, notes on slowdowns that did not count, and the rows re-timed."""

    regressions: list[Finding] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    retimed: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.regressions

    def as_dict(self, options: GateOptions) -> dict[str, Any]:
        return {"passed": self.passed, "test": SIGNIFICANCE_TEST, "significance": options.significance,
                "max_slowdown": options.max_slowdown, "regressions": [f.message for f in self.regressions],
                "notes": self.notes, "retimed": self.retimed}


def require_scipy() -> None:
    """The significance test is scipy's; refused in one line before any timing where it is not installed."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        raise HubedgeError("the gate's significance test needs scipy: pip install 'hubedge[gate]'") from None


def _key(row: dict[str, Any], report: dict[str, Any]) -> Key:
    """A row's identity across runs: the artifact's model, format and precision, where it ran, and the CPU class
    of the machine that timed it (a cluster bench records it per row; a local one once for the run)."""
    cpu = row.get("cpu_class") or report.get("machine", {}).get("cpu_class", "")
    return (row["model"], row["format"], row["precision"], row["runtime"], row["device"], cpu)


def _relative_p50(report: dict[str, Any]) -> dict[Key, float]:
    """Each measured row's latency over its reference row in the same report (paired when timed so)."""
    references = reference_rows(report)
    return {_key(row, report): relative_latency(row, references[place(row)]) for row in report["rows"]
            if row["status"] == "ok" and not row.get("reference") and place(row) in references}


def check_modes(current: dict[str, Any], baseline: dict[str, Any]) -> None:
    """Ratios to a TF reference and ratios to a reference artifact are different figures: never compared."""
    now, before = current.get("reference_mode", "tf"), baseline.get("reference_mode", "tf")
    if now != before:
        raise HubedgeError(f"the baseline was taken with --reference-mode {before} and this run used {now}; its ratios "
                           f"are to another reference, so they cannot be compared: save a baseline in {now} mode")


def _name(key: Key) -> str:
    model, fmt, precision, runtime, device, cpu = key
    return f"{model} {fmt} {precision} on {runtime}/{device}" + (f" ({cpu})" if cpu and device == "cpu" else "")


def _blocks(row: dict[str, Any]) -> list[float]:
    return [float(ratio) for ratio in (row.get("vs_reference") or {}).get("block_ratios") or []]


def slowdown_p_value(now: Sequence[float], before: Sequence[float], significance: float) -> tuple[float | None, str]:
    """The p-value of "today's block ratios are larger than the baseline's", or None and why it cannot be had:
    blocks missing on a side (pairing off, an older baseline), or too few for any p-value below ``significance``
    (the exact test's smallest is 1 / C(n + m, n))."""
    if not now or not before:
        return None, "no per-block ratios on " + ("either side" if not now and not before else
                                                  "this run's side" if not now else "the baseline's side")
    if 1.0 / math.comb(len(now) + len(before), len(now)) >= significance:
        return None, f"{len(now)} + {len(before)} blocks are too few for p < {significance:g}"
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(now, before, alternative="greater").pvalue), ""


def _slowdown(key: Key, row: dict[str, Any], ratio_now: float, before_row: dict[str, Any], ratio_before: float,
              options: GateOptions, against: str) -> tuple[Finding | None, str]:
    """A row's latency against the baseline's: a finding, or a note when the slowdown is not significant."""
    if ratio_now <= ratio_before * (1.0 + options.max_slowdown):
        return None, ""
    text = (f"{_name(key)}: {ratio_now / ratio_before - 1.0:.0%} slower relative to {against} (p50 "
            f"{ratio_before:.3f}× → {ratio_now:.3f}× of the reference's; allowed {options.max_slowdown:.0%})")
    p_value, why_none = slowdown_p_value(_blocks(row), _blocks(before_row), options.significance)
    partner = str(row.get("reference_artifact", ""))
    if p_value is None:
        return Finding(key, row["artifact"], f"{text}; judged on the threshold alone: {why_none}", True, partner), ""
    evidence = f"Mann-Whitney U p = {p_value:.4f} over {len(_blocks(row))} + {len(_blocks(before_row))} blocks"
    if p_value < options.significance:
        return Finding(key, row["artifact"], f"{text}; significant ({evidence})", True, partner), ""
    return None, f"{text}, but not significant ({evidence} ≥ {options.significance:g}): not counted"


def _findings(current: dict[str, Any], baseline: dict[str, Any], options: GateOptions,
              keys: set[Key] | None = None) -> tuple[list[Finding], list[str]]:
    """Every regression of ``current`` against ``baseline`` (only ``keys`` when given), and the notes."""
    check_modes(current, baseline)
    against = "the TF reference" if current.get("reference_mode", "tf") == "tf" else "its reference artifact"
    findings: list[Finding] = []
    notes: list[str] = []
    now, before = _relative_p50(current), _relative_p50(baseline)
    classes_now, classes_before = {key[5] for key in now} - {""}, {key[5] for key in before} - {""}
    if classes_now and classes_before and not classes_now & classes_before:
        raise HubedgeError(f"the baseline was timed on {', '.join(sorted(classes_before))} CPUs and this run on "
                           f"{', '.join(sorted(classes_now))}; int8 gains differ between CPU classes, so their ratios "
                           "do not compare: keep one baseline per CPU class")
    rows_now = {_key(row, current): row for row in current["rows"] if not row.get("reference")}
    rows_before = {_key(row, baseline): row for row in baseline["rows"] if not row.get("reference")}
    for key, ratio_before in before.items():
        if keys is not None and key not in keys:
            continue
        row = rows_now.get(key)
        if row is None:
            findings.append(Finding(key, "", f"{_name(key)}: in the baseline, missing from this run"))
        elif row["status"] != "ok":
            findings.append(Finding(key, row["artifact"], f"{_name(key)}: ran in the baseline, now {row['status']}: "
                                                          f"{row.get('reason', '')}"))
        elif key in now:
            finding, note = _slowdown(key, row, now[key], rows_before[key], ratio_before, options, against)
            findings += [finding] if finding else []
            notes += [note] if note else []
    for key, row in rows_now.items():
        if row["status"] != "ok" or (keys is not None and key not in keys):
            continue
        agreement = row["agreement"]
        if options.min_top1 is not None and "top1" in agreement and agreement["top1"] < options.min_top1:
            findings.append(Finding(key, row["artifact"],
                                    f"{_name(key)}: top-1 agreement {agreement['top1']:.3f} < {options.min_top1}"))
        if options.min_cosine is not None and agreement["cosine_min"] < options.min_cosine:
            findings.append(Finding(key, row["artifact"],
                                    f"{_name(key)}: cosine_min {agreement['cosine_min']:.5f} < {options.min_cosine}"))
    return findings, notes


def judge(current: dict[str, Any], baseline: dict[str, Any], options: GateOptions,
          retime: Callable[[list[str]], dict[str, Any]] | None = None) -> GateResult:
    """The gate's verdict on ``current``. Rows that fail by slowing down are benched again once through ``retime``
    (artifact paths → a bench report; in recorded mode with the artifacts their latency is paired with), and the
    second run decides for them."""
    findings, notes = _findings(current, baseline, options)
    slow = [finding for finding in findings if finding.slowdown]
    if not slow or retime is None:
        return GateResult(findings, notes)
    keys = {finding.key for finding in slow}
    artifacts = sorted({finding.artifact for finding in slow})
    partners = sorted({finding.partner for finding in slow if finding.partner} - set(artifacts))
    again, again_notes = _findings(retime(artifacts + partners), baseline, options, keys)
    notes += [f"re-timed once: {finding.message}" for finding in slow] + again_notes
    kept = [finding for finding in findings if not finding.slowdown]
    return GateResult(kept + [finding for finding in again if finding.slowdown or finding not in kept], notes,
                      artifacts)


def compare(current: dict[str, Any], baseline: dict[str, Any], options: GateOptions) -> list[str]:
    """Readable regressions of ``current`` against ``baseline``, with no re-timing; empty when the run passes."""
    return [finding.message for finding in judge(current, baseline, options).regressions]
