"""The bundled photos (see LICENSES.md beside this file) and their fixed calibration / evaluation split.

Every fourth photo in name order is held apart for evaluation and verification; the rest calibrate
quantizers and centre seeded heads. Calibration photos are never used to judge an artifact.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIR", "IMAGE_SUFFIXES", "calibration_photos", "evaluation_photos", "photos"]

DIR = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def photos() -> list[Path]:
    """All bundled photos, sorted by name."""
    return sorted(p for p in DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def evaluation_photos() -> list[Path]:
    """The held-apart photos: every fourth in name order."""
    return photos()[3::4]


def calibration_photos() -> list[Path]:
    """The photos that calibrate, never the held-apart ones."""
    held = set(evaluation_photos())
    return [p for p in photos() if p not in held]
