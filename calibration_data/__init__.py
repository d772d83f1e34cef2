"""The bundled photos (see LICENSES.md beside this file) and their fixed calibration / evaluation split.

Every fourth photo in name order is held apart for evaluation and verification; the rest calibrate
quantizers and centre seeded heads. The photos in ``evaluation/`` only ever judge artifacts: with them, one
flipped image moves a top-k figure by well under 1 %, and they leave every calibration set as it was.
Calibration photos are never used to judge an artifact.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIR", "EVALUATION_DIR", "IMAGE_SUFFIXES", "calibration_photos", "evaluation_photos",
    "held_apart_photos", "photos"]

DIR = Path(__file__).resolve().parent
EVALUATION_DIR = DIR / "evaluation"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def photos() -> list[Path]:
    """The bundled photos the split is drawn from (not the evaluation-only ones), sorted by name."""
    return _images_in(DIR)


def held_apart_photos() -> list[Path]:
    """The split's held-apart photos: every fourth of :func:`photos` in name order."""
    return photos()[3::4]


def evaluation_photos() -> list[Path]:
    """Every photo that judges and never calibrates: the held-apart ones, then the evaluation-only ones."""
    return held_apart_photos() + _images_in(EVALUATION_DIR)


def calibration_photos() -> list[Path]:
    """The photos that calibrate, never the held-apart ones."""
    held = set(evaluation_photos())
    return [p for p in photos() if p not in held]
