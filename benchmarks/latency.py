"""Latency of a predictor: first call, then percentiles over timed calls after a warm-up.

Calls go through ``Predictor.predict`` on an already preprocessed float32 batch, which is what an app that
preprocesses once pays per inference; decoding and resizing are not timed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from hubedge.runtimes.base import Predictor


@dataclasses.dataclass
class LatencyStats:
    """Milliseconds per call at batch 1, and images per second at each batch size."""

    first_call_ms: float
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    runs: int
    throughput: dict[int, float]
    direct_p50: float | None = None  # the runtime's own call, timed interleaved with predict()

    def latency_ms(self) -> dict[str, float]:
        return {key: round(getattr(self, key), 3) for key in ("p50", "p90", "p99", "mean", "std")}


def _timed(predictor: Predictor, batch: np.ndarray, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.predict(batch)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def p50_now(predictor: Predictor, one: np.ndarray, runs: int) -> float:
    """The p50 of ``runs`` calls made now, in ms (for a check that must be timed next to something else)."""
    return statistics.median(_timed(predictor, one, runs))


def predict_overhead(predictor: Predictor, one: np.ndarray, runs: int) -> tuple[float, float]:
    """p50 of ``predict()`` and of the runtime's own call on the same image, timed alternately in one loop so
    that drift of a busy machine falls on both alike; what ``predict()`` adds is their ratio."""
    direct = predictor.direct_call(one)
    direct()
    ours, theirs = [], []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.predict(one)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        direct()
        theirs.append(time.perf_counter() - started)
    return statistics.median(ours) * 1000.0, statistics.median(theirs) * 1000.0


@dataclasses.dataclass(frozen=True)
class PairedTiming:
    """A row timed in blocks that alternate with its reference; ``ratio`` is the row's latency over the
    reference's, the median of the per-block-pair ratios."""

    ratio: float
    p50: float
    reference_p50: float
    blocks: int
    calls: int
    block_ratios: tuple[float, ...] = ()  # one per block pair: what the gate's significance test compares

    def as_dict(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "p50_ms": round(self.p50, 3),
                "reference_p50_ms": round(self.reference_p50, 3), "blocks": self.blocks, "calls": self.calls,
                "block_ratios": [round(ratio, 4) for ratio in self.block_ratios]}


def paired_timing(predictor: Predictor, reference: Predictor, one: np.ndarray, blocks: int,
                  calls: int) -> PairedTiming:
    """Times ``predictor`` against ``reference`` in ``blocks`` alternating blocks of ``calls`` calls each.

    Why: on a shared VM the whole machine can run markedly slower for tens of seconds at a time
    (``benchmarks/records/settings-figures.md``). Two rows timed one after the other can
    land in different phases; two blocks next to each other land in the same one, so the ratio of a block pair
    is steady even when each latency is not. The first call of each block is untimed: it pays for the other
    runtime's threads going idle.
    """
    if blocks < 1 or calls < 1:
        raise ValueError("paired timing needs at least one block of one call")
    ratios, ours, theirs = [], [], []
    for _ in range(blocks):
        _timed(reference, one, 1)
        reference_times = _timed(reference, one, calls)
        _timed(predictor, one, 1)
        times = _timed(predictor, one, calls)
        ratios.append(statistics.median(times) / statistics.median(reference_times))
        ours += times
        theirs += reference_times
    return PairedTiming(ratio=statistics.median(ratios), p50=statistics.median(ours),
                        reference_p50=statistics.median(theirs), blocks=blocks, calls=calls,
                        block_ratios=tuple(ratios))


def measure(predictor: Predictor, images: np.ndarray, runs: int, warmup: int, batches: list[int]) -> LatencyStats:
    """Times ``predictor`` on batches cut from ``images`` (cycled when a batch is larger than the set)."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    one = images[:1]
    started = time.perf_counter()
    predictor.predict(one)
    first = (time.perf_counter() - started) * 1000.0
    _timed(predictor, one, warmup)
    times = _timed(predictor, one, runs)
    throughput = {}
    for size in batches:
        batch = images[np.arange(size) % len(images)]
        _timed(predictor, batch, 1)  # warm the batch shape
        per_call = statistics.median(_timed(predictor, batch, max(3, runs // size)))
        throughput[size] = round(size / (per_call / 1000.0), 2)
    percentiles = np.percentile(times, [50, 90, 99])
    return LatencyStats(
        first_call_ms=round(first, 3), p50=float(percentiles[0]), p90=float(percentiles[1]),
        p99=float(percentiles[2]), mean=float(np.mean(times)), std=float(np.std(times)), runs=runs,
        throughput=throughput,
    )
