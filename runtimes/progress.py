"""How far a long pass over images is, with the time left, and the pass itself in chunks.

Why: on 2 cores one pass of a large BiT over the 132 evaluation images takes minutes (the FP32 reference of an
R101x3, each verification, each emulated CPU class), and a step that says nothing for that long looks hung. A pass
in chunks also holds one chunk's activations at a time instead of the whole batch's, which for the largest BiTs is
gigabytes. Small models finish before the first line is due, so they stay quiet.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import numpy as np

__all__ = ["CHUNK_IMAGES", "REFERENCE_CHUNK_IMAGES", "Progress", "predict_in_chunks", "time_left"]

# images per call in a pass: progress at that step, and one chunk's activations held at a time. A verification child
# runs 8 (most runtimes run one image a call anyway, and an emulated CPU class takes seconds an image); TensorFlow's
# reference 32, as fast as the whole batch where 8 cost a quarter more (R50x3: 32 s, 8: 40 s, 132 at once: 31 s)
CHUNK_IMAGES = 8
REFERENCE_CHUNK_IMAGES = 32
QUIET_S = 15.0  # nothing is said before a pass has run this long
EVERY_S = 30.0  # and then at most this often


def time_left(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``, rounded to the second."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """Says ``what: done/total unit, about H:MM:SS left`` through ``say`` as a pass goes. The rate is measured from
    the first count heard, so that the time a child spent loading the model does not inflate the estimate."""

    def __init__(self, say: Callable[[str], None] | None, what: str, total: int, unit: str = "images",
                 quiet_s: float | None = None, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.what, self.total, self.unit = say, what, total, unit
        self.quiet_s = QUIET_S if quiet_s is None else quiet_s
        self.every_s = EVERY_S if every_s is None else every_s
        self.clock = clock
        self.started = clock()
        self.first: tuple[float, int] | None = None  # when the first count came, and what it was
        self.last_said: float | None = None

    def update(self, done: int) -> None:
        now = self.clock()
        if self.first is None and done > 0:
            self.first = (now, done)
        if self.say is None or not 0 < done < self.total or now - self.started < self.quiet_s:
            return
        if self.last_said is not None and now - self.last_said < self.every_s:
            return
        self.last_said = now
        since, counted = self.first
        seconds_each = (now - since) / (done - counted) if done > counted else (now - self.started) / done
        left = seconds_each * (self.total - done)
        self.say(f"  {self.what}: {done}/{self.total} {self.unit}, about {time_left(left)} left")


def predict_in_chunks(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                      on_done: Callable[[int], None] | None = None, size: int = CHUNK_IMAGES) -> np.ndarray:
    """``predict(images)``, run ``size`` images at a time; ``on_done`` hears how many are done after each chunk."""
    outputs = []
    for start in range(0, len(images), size):
        outputs.append(np.asarray(predict(images[start:start + size])))
        if on_done is not None:
            on_done(start + len(outputs[-1]))
    return np.concatenate(outputs) if outputs else np.asarray(predict(images))
