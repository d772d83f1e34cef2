"""Timing arithmetic on a fake clock: what pairing with the reference buys when the machine's speed drifts."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from hubedge.benchmarks import latency


class DriftingMachine:
    """A fake clock whose machine runs 1.6x slower in every other stretch of ``stretch`` calls."""

    def __init__(self, stretch: int) -> None:
        self.now, self.calls, self.stretch = 0.0, 0, stretch

    def perf_counter(self) -> float:
        return self.now

    def run(self, cost_s: float) -> None:
        slow = (self.calls // self.stretch) % 2 == 1
        self.now += cost_s * (1.6 if slow else 1.0)
        self.calls += 1


class FakePredictor:
    def __init__(self, machine: DriftingMachine, cost_s: float) -> None:
        self.machine, self.cost_s = machine, cost_s

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.machine.run(self.cost_s)
        return images


@pytest.fixture
def machine(monkeypatch) -> DriftingMachine:
    fake = DriftingMachine(stretch=12)  # one block pair: 2 x (1 untimed + 5 timed) calls
    monkeypatch.setattr(latency.time, "perf_counter", fake.perf_counter)
    return fake


def test_paired_blocks_give_the_true_ratio_where_separate_timings_do_not(machine):
    one = np.zeros((1, 4, 4, 3), np.float32)
    row, reference = FakePredictor(machine, 0.002), FakePredictor(machine, 0.010)
    paired = latency.paired_timing(row, reference, one, blocks=6, calls=5)
    assert paired.ratio == pytest.approx(0.2) and (paired.blocks, paired.calls) == (6, 5)
    assert paired.as_dict()["ratio"] == 0.2

    # the same two predictors timed one after the other land in different phases of the drift
    machine.calls = 0
    separate_row = statistics.median(latency._timed(row, one, 12))
    separate_reference = statistics.median(latency._timed(reference, one, 12))
    assert separate_row / separate_reference == pytest.approx(0.2 / 1.6)  # row fast, reference slow


def test_paired_timing_refuses_empty_blocks(machine):
    one = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="at least one block"):
        latency.paired_timing(FakePredictor(machine, 1), FakePredictor(machine, 1), one, blocks=0, calls=5)
