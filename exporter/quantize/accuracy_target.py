"""What an accuracy-aware int8 export must reach: a target on agreement with the FP32 reference.

Written ``sqnr_db=22`` or ``top1_margin=0.99,top5=0.95`` (CLI ``--accuracy-target``, or
``ExportOptions(accuracy_target=...)``): each term is a figure of ``hubedge.runtimes.agreement.summarize`` and the least
value it may take. ``top1_margin`` is margin-aware top-1 (images whose FP32 top-1 leads its top-2 by at least
``hubedge.runtimes.agreement.TOP1_MARGIN``).
"""

from __future__ import annotations

import dataclasses
import math

from hubedge.runtimes.errors import InvalidInputError

__all__ = ["AccuracyTarget", "CLASSIFICATION_METRICS", "METRICS"]

# figure → what it is; the ratios lie in [0, 1], sqnr_db is in dB
METRICS = {
    "top1_margin": "margin-aware top-1 agreement",
    "top1": "top-1 agreement",
    "top5": "top-5 overlap",
    "cosine_min": "lowest per-image cosine similarity",
    "sqnr_db": "signal-to-quantization-noise ratio (dB)",
}
CLASSIFICATION_METRICS = ("top1_margin", "top1", "top5")
_EXAMPLE = "for example sqnr_db=22, cosine_min=0.98 or top1_margin=0.99,top5=0.95"


@dataclasses.dataclass(frozen=True)
class AccuracyTarget:
    """Least values of agreement figures, in the order written."""

    limits: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> AccuracyTarget:
        """``"top1_margin=0.99,top5=0.95"`` → a target; anything else is refused in one line."""
        limits: dict[str, float] = {}
        for term in (part.strip() for part in str(text).split(",")):
            if not term:
                continue
            name, equals, value = (piece.strip() for piece in term.partition("="))
            if not equals or name not in METRICS:
                raise InvalidInputError(f"--accuracy-target: {term!r} is not metric=value with a metric of "
                                        f"{', '.join(METRICS)} ({_EXAMPLE})")
            try:
                number = float(value)
            except ValueError:
                raise InvalidInputError(f"--accuracy-target: {name}={value!r} needs a number ({_EXAMPLE})") from None
            if not math.isfinite(number) or (name != "sqnr_db" and not 0.0 < number <= 1.0) or \
                    (name == "sqnr_db" and number <= 0.0):
                bounds = "a positive number of dB" if name == "sqnr_db" else "a share in (0, 1]"
                raise InvalidInputError(f"--accuracy-target: {name} must be {bounds}; got {value}")
            if name in limits:
                raise InvalidInputError(f"--accuracy-target names {name} twice")
            limits[name] = number
        if not limits:
            raise InvalidInputError(f"--accuracy-target is empty ({_EXAMPLE})")
        return cls(tuple(limits.items()))

    @property
    def spec(self) -> str:
        return ",".join(f"{name}={value:g}" for name, value in self.limits)

    def needs_classes(self) -> list[str]:
        """The terms that only a classifier has figures for."""
        return [name for name, _ in self.limits if name in CLASSIFICATION_METRICS]

    def missed(self, figures: dict[str, float]) -> list[tuple[str, float, float]]:
        """``(metric, value, limit)`` of each term not met; a figure that could not be measured (no image with a
        clear enough margin) is not met, with value NaN."""
        return [(name, float(figures.get(name, math.nan)), limit) for name, limit in self.limits
                if not figures.get(name, math.nan) >= limit]

    def met(self, figures: dict[str, float]) -> bool:
        return not self.missed(figures)

    def score(self, figures: dict[str, float]) -> float:
        """One number that is at least 1 exactly when every term is met, and grows with the worst term's
        headroom (ratios by their own difference, dB by a tenth per dB, each capped at 1, so an FP32 model's
        SQNR of 100 dB or more counts as an exact match). For ranking trials, and as NNCF's validation metric."""
        gaps = []
        for name, limit in self.limits:
            value = figures.get(name, math.nan)
            gap = (value - limit) / (10.0 if name == "sqnr_db" else 1.0)
            gaps.append(-1.0 if math.isnan(gap) else min(gap, 1.0))
        return 1.0 + min(gaps)

    def describe(self, figures: dict[str, float]) -> str:
        """The target's figures as measured, e.g. ``top1_margin 0.989, top5 0.952``."""
        return ", ".join(f"{name} {figures.get(name, math.nan):.{1 if name == 'sqnr_db' else 3}f}"
                         for name, _ in self.limits)
